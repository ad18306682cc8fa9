"""The dashboard's figures (``GET /dashboard/overview``): what an operator reads off the page,
computed in one Redis round trip whatever the depth, and who may read them."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
import redis.asyncio as aredis

from redisched.queue.keys import RATE_BUCKET_SECONDS, RATE_COUNT_SPAN, RATE_SLOTS
from redisched.queue.queue import TaskQueues
from redisched.queue.stats import read_snapshot
from tests.acceptance.harness import api_client, boefje_push, db_dsn, settings, template_db  # noqa: F401

ADMIN, RUNNER, VIEWER = ({"authorization": f"Bearer {name}-secret"} for name in ("admin", "runner", "viewer"))


@pytest.fixture
async def guarded(settings):
    tokens = {"admin_tokens": ["admin-secret"], "runner_tokens": ["runner-secret"], "viewer_tokens": ["viewer-secret"]}
    async with api_client(settings.model_copy(update=tokens)) as client:
        yield client


async def _push(api, n: int, org: str = "org1", prefix: str = "h") -> list[dict]:
    pushed = []
    for i in range(n):
        response = await api.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{prefix}{i}.example", org=org), headers=ADMIN)
        assert response.status_code == 201, response.text
        pushed.append(response.json())
    return pushed


def _boefje(overview: dict) -> dict:
    return next(s for s in overview["schedulers"] if s["id"] == "boefje")


async def test_overview_shows_depth_leases_rates_and_organisations(guarded):
    await _push(guarded, 3, org="org-a")
    await _push(guarded, 2, org="org-b", prefix="b")
    [popped] = (await guarded.post("/schedulers/boefje/pop", headers=RUNNER)).json()["results"]
    assert (await guarded.patch(f"/tasks/{popped['id']}", json={"status": "running"}, headers=RUNNER)).status_code == 200

    overview = (await guarded.get("/dashboard/overview", headers=VIEWER)).json()
    boefje = _boefje(overview)
    assert overview["role"] == "viewer"
    assert boefje["depth"] == 4 and boefje["leased"] == 1 and boefje["past_timeout"] == 0
    assert sum(boefje["rates"]["push"]) == 5 and sum(boefje["rates"]["pop"]) == 1
    assert boefje["next_lease"]["task_id"] == popped["id"] and boefje["next_lease"]["status"] == "running"
    assert 0 < boefje["next_lease"]["expires_in_seconds"]
    depth = {org["organisation"]: org["depth"] for org in overview["organisations"]}
    assert depth == {"org-a": 3 - (popped["organisation"] == "org-a"), "org-b": 2 - (popped["organisation"] == "org-b")}
    assert overview["history_error"] is None


async def test_a_tasks_status_history_lists_every_change(guarded):
    [task] = await _push(guarded, 1)
    [popped] = (await guarded.post("/schedulers/boefje/pop", headers=RUNNER)).json()["results"]
    for status in ("running", "completed"):
        assert (await guarded.patch(f"/tasks/{popped['id']}", json={"status": status}, headers=RUNNER)).status_code == 200
    history = (await guarded.get(f"/dashboard/tasks/{task['id']}/history", headers=VIEWER)).json()
    assert [(change["op"], change["status"]) for change in history] == [
        ("push", "queued"), ("pop", "dispatched"), ("patch", "running"), ("patch", "completed")
    ]
    assert [change["at"] for change in history] == sorted(change["at"] for change in history)
    assert (await guarded.get("/dashboard/tasks/00000000-0000-4000-8000-000000000000/history", headers=VIEWER)).json() == []
    assert (await guarded.get("/dashboard/tasks/nope/history", headers=VIEWER)).status_code == 422


async def test_failures_are_counted_per_minute(guarded):
    pushed = await _push(guarded, 2)
    for _ in pushed:
        [task] = (await guarded.post("/schedulers/boefje/pop", headers=RUNNER)).json()["results"]
        assert (await guarded.patch(f"/tasks/{task['id']}", json={"status": "failed"}, headers=RUNNER)).status_code == 200
    boefje = _boefje((await guarded.get("/dashboard/overview", headers=ADMIN)).json())
    assert boefje["failures_last_minute"] == 2 and sum(boefje["rates"]["fail"]) == 2


@pytest.mark.parametrize(
    "left",
    [
        lambda bucket: (bucket - 2 * RATE_SLOTS) * RATE_COUNT_SPAN + 99,  # 99 counts of an hour ago
        lambda bucket: f"{bucket - 2 * RATE_SLOTS}:99",  # the same in an earlier version's text
        lambda bucket: "not a count",  # written by hand
        lambda bucket: 2**63 - 1,  # one more overflows HINCRBY
    ],
)
async def test_a_rate_slot_from_an_older_lap_or_written_by_hand_starts_over(guarded, sync_redis, key_prefix, left):
    bucket = int(time.time()) // RATE_BUCKET_SECONDS
    for slot in (bucket, bucket + 1):  # the push may fall in the next bucket
        sync_redis.hset(f"{key_prefix}:{{boefje}}:rates", f"push:{slot % RATE_SLOTS}", left(slot))
    await _push(guarded, 1)
    boefje = _boefje((await guarded.get("/dashboard/overview", headers=ADMIN)).json())
    assert boefje["rates"]["push"][-1] in (1, 0) and sum(boefje["rates"]["push"]) == 1  # 0: the push fell in the next bucket


async def test_quarantined_events_are_counted(guarded, sync_redis, key_prefix):
    assert (await guarded.get("/dashboard/overview", headers=ADMIN)).json()["quarantined"] == 0
    sync_redis.xadd(f"{key_prefix}:{{normalizer}}:events:dead", {"op": "push", "reason": "refused"})
    overview = (await guarded.get("/dashboard/overview", headers=ADMIN)).json()
    assert overview["quarantined"] == 1
    assert next(s for s in overview["schedulers"] if s["id"] == "normalizer")["quarantined"] == 1


async def test_tasks_past_their_timeout_show_until_reaped(guarded, sync_redis, key_prefix):
    await _push(guarded, 1)
    [task] = (await guarded.post("/schedulers/boefje/pop", headers=RUNNER)).json()["results"]
    sync_redis.zadd(f"{key_prefix}:{{boefje}}:leases", {task["id"]: 1000})  # expired long ago
    boefje = _boefje((await guarded.get("/dashboard/overview", headers=ADMIN)).json())
    assert boefje["past_timeout"] in (0, 1)  # the reaper may have taken it back meanwhile
    if boefje["past_timeout"]:
        assert boefje["next_lease"]["expires_in_seconds"] < 0


async def test_viewer_reads_everything_and_changes_nothing(guarded):
    [task] = await _push(guarded, 1)
    for path in ("/dashboard/overview", "/tasks", f"/tasks/{task['id']}", "/schedulers", "/metrics", "/tasks/stats"):
        assert (await guarded.get(path, headers=VIEWER)).status_code == 200, path
    assert (await guarded.post("/tasks", json={"filters": []}, headers=VIEWER)).status_code == 200
    for method, path, body in (
        ("PATCH", f"/tasks/{task['id']}", {"status": "queued"}),
        ("PATCH", f"/tasks/{task['id']}", {"priority": 3}),
        ("POST", "/schedulers/boefje/push", boefje_push("Hostname|internet|v.example")),
        ("POST", "/schedulers/boefje/pop", None),
    ):
        response = await guarded.request(method, path, json=body, headers=VIEWER)
        assert response.status_code == 403, (method, path)
    assert (await guarded.get("/dashboard/overview", headers=RUNNER)).status_code == 403
    assert (await guarded.get("/dashboard/overview")).status_code == 401
    assert (await guarded.get("/dashboard/auth")).json() == {"required": True}
    page = await guarded.get("/dashboard")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]


class _CountingRedis(aredis.Redis):
    """Counts round trips: single commands and pipeline executions."""

    round_trips = 0

    async def execute_command(self, *args, **options):
        type(self).round_trips += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted(raise_on_error=True):
            type(self).round_trips += 1
            return await execute(raise_on_error)

        pipe.execute = counted
        return pipe


@pytest.mark.parametrize("depth", [10, 2000])
async def test_one_round_trip_whatever_the_depth(guarded, redis_url, depth):
    queues = guarded.services.queues
    def push(i: int):
        data = {"boefje": {"id": "dns-records"}, "input_ooi": f"Hostname|internet|d{i}.example", "organization": "o"}
        return queues.push("boefje", organisation=f"org{i % 7}", priority=10, data=data)

    for start in range(0, depth, 500):  # concurrent pushes share round trips (the pipeliner)
        await asyncio.gather(*(push(i) for i in range(start, min(depth, start + 500))))
    await read_snapshot(queues.redis, queues.layout)  # the script in Redis' cache (NOSCRIPT costs one more)
    counting = _CountingRedis.from_url(redis_url)
    try:
        _CountingRedis.round_trips = 0
        snapshot = await read_snapshot(counting, queues.layout)
        assert _CountingRedis.round_trips == 1
    finally:
        await counting.aclose()
    assert snapshot.queues["boefje"].depth == depth
    assert sum(snapshot.queues["boefje"].organisations.values()) == depth
    assert len(snapshot.queues["boefje"].organisations) == min(7, depth)


async def test_the_figures_add_up_across_partitions_and_on_a_cluster(backend_redis, queue_layout):
    """On the single Redis, the 3-master cluster and the cluster with 3 partitions per queue."""
    queues = TaskQueues(backend_redis, queue_layout())
    for i in range(12):
        data = {"boefje": {"id": "dns-records"}, "input_ooi": f"Hostname|internet|p{i}.example", "organization": "o"}
        await queues.push("boefje", organisation=f"org{i % 3}", priority=10, data=data)
    popped = await queues.pop("boefje")
    snapshot = await read_snapshot(backend_redis, queues.layout)
    boefje = snapshot.queues["boefje"]
    assert (boefje.depth, boefje.leased, sum(boefje.rates["push"]), sum(boefje.rates["pop"])) == (11, 1, 12, 1)
    assert boefje.organisations == {f"org{i}": 4 - (popped[0].organisation == f"org{i}") for i in range(3)}
    assert boefje.next_lease.task_id == popped[0].id
    assert snapshot.used_memory > 0


LIMITS = [
    {"boefje": "nmap", "group": "nmap", "concurrency": 2},
    {"boefje": "dns-records", "group": "dns-{organisation}", "cooldown": 60},
]


async def test_limit_groups_show_in_use_of_limit_next_allowed_time_and_waiting(settings):
    tokens = {"admin_tokens": ["admin-secret"], "runner_tokens": ["runner-secret"], "viewer_tokens": ["viewer-secret"]}
    async with api_client(settings.model_copy(update={**tokens, "limits": LIMITS})) as api:
        for i in range(3):
            push = boefje_push(f"Hostname|internet|n{i}.example", boefje_id="nmap", priority=1)
            assert (await api.post("/schedulers/boefje/push", json=push, headers=ADMIN)).status_code == 201
        await _push(api, 2)  # dns-records, priority 10
        popped = []
        for _ in range(3):
            popped += (await api.post("/schedulers/boefje/pop?limit=1", headers=RUNNER)).json()["results"]
        assert [task["data"]["boefje"]["id"] for task in popped] == ["nmap", "nmap", "dns-records"]

        before = time.time()
        overview = (await api.get("/dashboard/overview", headers=VIEWER)).json()
        groups = {figure["group"]: figure for figure in overview["limits"]}
        assert set(groups) == {"nmap", "dns-org1"}
        nmap, dns = groups["nmap"], groups["dns-org1"]
        assert (nmap["in_use"], nmap["limit"], nmap["waiting"], nmap["next_allowed_at"]) == (2, 2, 1, None)
        assert (dns["in_use"], dns["limit"], dns["waiting"], dns["spacing_seconds"]) == (1, None, 1, 60)
        next_allowed = datetime.fromisoformat(dns["next_allowed_at"]).timestamp()
        assert before + 55 < next_allowed <= before + 61
        assert overview["limits_capped"] is False


async def test_no_limit_rules_no_limits_section(guarded):
    assert (await guarded.get("/dashboard/overview", headers=VIEWER)).json()["limits"] is None
