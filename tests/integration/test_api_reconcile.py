"""``redisched reconcile`` after Redis lost a queue: live tasks come back from Postgres."""

from __future__ import annotations

from redisched.app import reconcile
from tests.acceptance.harness import api, boefje_push, db_dsn, settings, template_db  # noqa: F401


async def test_reconcile_restores_queued_and_dispatched_tasks(api, sync_redis, key_prefix):
    queued = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|q.example", priority=2))).json()
    dispatched = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|d.example", priority=1))).json()
    await api.post("/schedulers/boefje/pop")
    assert (await api.get("/tasks")).json()["count"] == 2  # Postgres has both
    for key in sync_redis.scan_iter(match=f"{key_prefix}:*"):
        sync_redis.delete(key)  # Redis lost everything
    assert (await api.get(f"/tasks/{queued['id']}")).json()["status"] == "queued"  # from Postgres

    restored = await reconcile(api.services)

    assert restored.restored == 2
    assert (await api.get("/schedulers/boefje")).json()["qsize"] == 1
    [popped] = (await api.post("/schedulers/boefje/pop", json={"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": ["dns-records"]}]})).json()["results"]
    assert popped["id"] == queued["id"]
    assert (await api.patch(f"/tasks/{dispatched['id']}", json={"status": "completed"})).json()["status"] == "completed"
