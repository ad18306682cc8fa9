"""``/tasks``: list and count (Postgres, consistent with what was acknowledged before), stats,
one task, patch (live and finished), and pagination."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from tests.acceptance.harness import api, boefje_push, db_dsn, normalizer_push, settings, template_db  # noqa: F401

STATUSES = ["pending", "queued", "dispatched", "running", "completed", "failed", "cancelled"]


async def _push(api, name: str, **options) -> dict:
    response = await api.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{name}.example", **options))
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_listing_sees_the_pushes_and_pops_acknowledged_before_it(api):
    pushed = [await _push(api, f"t{i}") for i in range(3)]
    await api.post("/schedulers/boefje/pop")
    page = (await api.get("/tasks", params={"scheduler_id": "boefje"})).json()
    assert page["count"] == 3
    assert [t["id"] for t in page["results"]] == [t["id"] for t in reversed(pushed)]  # newest first
    assert sorted(t["status"] for t in page["results"]) == ["dispatched", "queued", "queued"]


async def test_pagination_links_keep_the_other_parameters(api):
    for i in range(5):
        await _push(api, f"page{i}")
    page = (await api.get("/tasks?scheduler_id=boefje&limit=2")).json()
    assert page["count"] == 5 and len(page["results"]) == 2
    assert page["next"] == "http://testserver/tasks?scheduler_id=boefje&limit=2&offset=2"
    assert page["previous"] is None
    page = (await api.get(page["next"])).json()
    assert page["previous"] == "http://testserver/tasks?scheduler_id=boefje&limit=2&offset=0"
    last = (await api.get("/tasks?scheduler_id=boefje&limit=2&offset=4")).json()
    assert len(last["results"]) == 1 and last["next"] is None


async def test_limit_zero_counts_without_results(api):
    for i in range(3):
        await _push(api, f"count{i}")
    page = (await api.post("/tasks?limit=0", json={"filters": [{"column": "organisation", "operator": "eq", "value": "org1"}]})).json()
    assert page["count"] == 3 and page["results"] == []


async def test_list_filters_on_query_and_body(api):
    await _push(api, "a", org="org1")
    await _push(api, "b", org="org2")
    await api.post("/schedulers/normalizer/push", json=normalizer_push())
    assert (await api.get("/tasks", params={"organisation": "org2"})).json()["count"] == 1
    assert (await api.get("/tasks", params={"task_type": "normalizer"})).json()["count"] == 1
    assert (await api.get("/tasks", params={"status": "queued"})).json()["count"] == 3
    body = {"filters": [{"column": "data", "field": "input_ooi", "operator": "eq", "value": "Hostname|internet|b.example"}]}
    assert (await api.post("/tasks", json=body)).json()["count"] == 1
    assert (await api.request("GET", "/tasks", json=body)).json()["count"] == 1


async def test_list_created_at_bounds_take_any_iso_8601(api):
    await _push(api, "when")
    today = datetime.now(timezone.utc).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert (await api.get("/tasks", params={"min_created_at": today.isoformat(), "max_created_at": tomorrow})).json()["count"] == 1
    naive_past = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert (await api.get("/tasks", params={"min_created_at": naive_past})).json()["count"] == 1
    assert (await api.get("/tasks", params={"max_created_at": naive_past})).json()["count"] == 0


async def test_list_min_after_max_is_400(api):
    response = await api.get("/tasks", params={"min_created_at": "2025-06-02", "max_created_at": "2025-06-01"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request error occurred: min_created_at must be less than max_created_at"}


async def test_list_bad_query_values_are_422(api):
    for params, loc in (({"status": "done"}, ["query", "status"]), ({"limit": "x"}, ["query", "limit"]),
                        ({"min_created_at": "yesterday"}, ["query", "min_created_at"])):  # fmt: skip
        response = await api.get("/tasks", params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == loc


async def test_list_bad_filter_is_400(api):
    response = await api.post("/tasks", json={"filters": [{"column": "nope", "operator": "eq", "value": 1}]})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Invalid filter(s): ")


async def test_stats_count_by_hour_and_status(api):
    await _push(api, "s1")
    await _push(api, "s2")
    await api.post("/schedulers/boefje/pop")
    stats = (await api.get("/tasks/stats", params={"scheduler_id": "boefje"})).json()
    [(hour, counts)] = stats.items()
    assert hour.endswith(":00:00+00:00")
    assert list(counts) == [*STATUSES, "total"]
    assert counts["queued"] == 1 and counts["dispatched"] == 1 and counts["total"] == 2
    assert (await api.get("/tasks/stats", params={"organisation_id": "nobody"})).json() == {}


async def test_get_task_is_exact_and_current(api):
    task = await _push(api, "get")
    await api.post("/schedulers/boefje/pop")
    await api.patch(f"/tasks/{task['id']}", json={"status": "running"})
    got = await api.get(f"/tasks/{task['id']}")
    assert got.status_code == 200
    assert got.json()["status"] == "running"


async def test_get_unknown_task_is_404_and_bad_uuid_422(api):
    missing = uuid.uuid4()
    response = await api.get(f"/tasks/{missing}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Resource not found: task not found, by task_id: {missing}"}
    response = await api.get("/tasks/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_id"]
    assert response.json()["detail"][0]["type"] == "uuid_parsing"


async def test_runner_lifecycle_running_then_completed(api):
    task = await _push(api, "life")
    [popped] = (await api.post("/schedulers/boefje/pop")).json()["results"]
    running = await api.patch(f"/tasks/{popped['id']}", json={"status": "running"})
    assert running.status_code == 200 and running.json()["status"] == "running"
    done = await api.patch(f"/tasks/{task['id']}", json={"status": "completed"})
    assert done.json()["status"] == "completed"
    assert (await api.get(f"/tasks/{task['id']}")).json()["status"] == "completed"


async def test_patch_errors(api):
    task = await _push(api, "patch-errors")
    for body in ({}, {"colour": "blue"}):
        response = await api.patch(f"/tasks/{task['id']}", json=body)
        assert response.status_code == 400
        assert response.json() == {"detail": "Bad request error occurred: no data to patch"}
    response = await api.patch(f"/tasks/{task['id']}", json={"status": "done"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "enum" and error["loc"] == ["body", "status"]
    assert error["msg"] == "Input should be 'pending', 'queued', 'dispatched', 'running', 'completed', 'failed' or 'cancelled'"
    missing = uuid.uuid4()
    response = await api.patch(f"/tasks/{missing}", json={"status": "completed"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"Resource not found: task not found, by task_id: {missing}"}


async def test_patch_a_finished_task_back_to_queued_requeues_it(api):
    task = await _push(api, "retry")
    await api.post("/schedulers/boefje/pop")
    await api.patch(f"/tasks/{task['id']}", json={"status": "failed"})
    await _until_gone_from_redis(api, task["id"])
    requeued = await api.patch(f"/tasks/{task['id']}", json={"status": "queued"})
    assert requeued.status_code == 200 and requeued.json()["status"] == "queued"
    [popped] = (await api.post("/schedulers/boefje/pop")).json()["results"]
    assert popped["id"] == task["id"]
    filters = {"filters": [{"column": "organisation", "operator": "eq", "value": "org1"}]}
    await api.patch(f"/tasks/{task['id']}", json={"status": "queued"})
    assert (await api.post("/schedulers/boefje/pop", json=filters)).json()["results"][0]["id"] == task["id"]


async def test_patch_a_finished_task_stays_in_history(api):
    task = await _push(api, "history")
    await api.patch(f"/tasks/{task['id']}", json={"status": "completed"})
    await _until_gone_from_redis(api, task["id"])
    patched = await api.patch(f"/tasks/{task['id']}", json={"status": "cancelled"})
    assert patched.json()["status"] == "cancelled"
    assert (await api.get(f"/tasks/{task['id']}")).json()["status"] == "cancelled"


async def test_patch_with_a_stale_lease_token_is_409(api):
    task = await _push(api, "stale")
    await api.post("/schedulers/boefje/pop")
    response = await api.patch(f"/tasks/{task['id']}", json={"status": "running"}, headers={"x-lease-token": "not-it"})
    assert response.status_code == 409


async def _until_gone_from_redis(api, task_id: str, timeout: float = 5.0) -> None:
    """The snapshotter drops finished tasks from Redis once Postgres has them."""
    queues = api.services.queues
    deadline = asyncio.get_running_loop().time() + timeout
    while await queues.get(task_id) is not None:
        assert asyncio.get_running_loop().time() < deadline, "finished task never left Redis"
        await asyncio.sleep(0.02)


async def test_list_filters_on_the_tasks_schedule(api):
    """mula joins a task's schedule: column ``schedule``, ``field`` one of its columns (or a
    path into its data); tasks without a schedule match no such filter, negated or not."""
    now = datetime.now(timezone.utc).isoformat()
    boefjes = [await _push(api, name) for name in ("s1", "s2")]
    await api.post("/schedulers/normalizer/push", json=normalizer_push())  # no schedule
    await api.patch(f"/schedules/{boefjes[1]['schedule_id']}", json={"enabled": False})

    async def listed(*filters, group: str = "and") -> set[str]:
        response = await api.post("/tasks", json={"filters": {group: list(filters)}})
        assert response.status_code == 200, response.text
        return {task["id"] for task in response.json()["results"]}

    ids = {task["id"] for task in boefjes}
    # a boefje push moves its schedule's deadline past the grace period
    assert await listed({"column": "schedule", "field": "deadline_at", "operator": "gt", "value": now}) == ids
    assert await listed({"column": "schedule", "field": "deadline_at", "operator": "lt", "value": now}) == set()
    assert await listed({"column": "schedule", "field": "enabled", "operator": "eq", "value": True}) == {boefjes[0]["id"]}
    assert await listed({"column": "schedule", "field": "enabled", "operator": "eq", "value": False}, group="not") == {boefjes[0]["id"]}
    by_data = {"column": "schedule", "field": "data__input_ooi", "operator": "eq", "value": boefjes[1]["data"]["input_ooi"]}
    assert await listed(by_data) == {boefjes[1]["id"]}
    assert await listed({"column": "schedule", "operator": "is_null"}) == ids  # no field: its cron, none here
    count = await api.post("/tasks", params={"limit": 0}, json={"filters": [{"column": "schedule", "field": "id", "operator": "eq", "value": boefjes[0]["schedule_id"]}]})
    assert count.json()["count"] == 1


async def test_a_bad_schedule_filter_is_400_and_pops_cannot_use_one(api):
    for bad in ({"column": "schedule", "field": "colour", "operator": "eq", "value": 1},
                {"column": "schedule", "field": "deadline_at", "operator": "like", "value": "2025%"},
                {"column": "schedule", "field": "enabled__x", "operator": "eq", "value": 1}):  # fmt: skip
        response = await api.post("/tasks", json={"filters": [bad]})
        assert response.status_code == 400 and response.json()["detail"].startswith("Invalid filter(s): "), bad
    await _push(api, "pop-schedule")
    popped = await api.post("/schedulers/boefje/pop", json={"filters": [{"column": "schedule", "field": "enabled", "operator": "eq", "value": True}]})
    assert popped.status_code == 400 and "listings" in popped.json()["detail"]
    assert (await api.get("/schedulers/boefje")).json()["qsize"] == 1
