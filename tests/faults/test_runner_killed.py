"""Scenario 1: a runner is kill -9'd while it holds a task. The lease expires, the reaper puts
the task back, another runner completes it, and the dead runner's late PATCH with its old
token is refused."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from redisched.errors import StaleLease
from tests.faults.audit import audit, report
from tests.faults.background import Background
from tests.faults.common import ROOT, log, task_data
from tests.faults.load import DirectRunner, Ledger, Load
from tests.faults.servers import ApiProcess
from redisched.limit_rules import parse_rules
from redisched.queue.records import decode_record
from tests.factories import boefje_data, normalizer_data

pytestmark = pytest.mark.timeout(60, method="thread")

LEASE_MS = 1500

# A runner: pops one task with the direct client, says which (id and lease token), then
# "works" on it until it is killed.
RUNNER = textwrap.dedent(
    """
    import json, sys, time
    import redis
    from redisched.client import Client
    from redisched.queue.layout import QueueLayout
    url, prefix, queue, lease_ms, fairness = sys.argv[1:6]
    layout = QueueLayout(prefix=prefix, dispatch_lease_ms=int(lease_ms), max_tries=1000, fairness=fairness)
    client = Client(redis.Redis.from_url(url), layout)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        popped = client.queue(queue).pop(limit=1)
        if popped:
            print(json.dumps({"id": popped[0].id, "lease": popped[0].lease}), flush=True)
            break
        time.sleep(0.01)
    time.sleep(60)
    """
)


def start_runner(redis_url: str, prefix: str, queue: str, fairness: str = "none") -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, redis_url, prefix, queue, str(LEASE_MS), fairness],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        proc.kill()
        raise AssertionError("the runner popped nothing within 20 s")
    return proc, json.loads(proc.stdout.readline())


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()
    assert proc.wait(10) == -9


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_runner_killed_mid_task_loses_nothing_and_its_late_patch_is_refused(private_redis_server, dsn, prefix):
    redis_url = private_redis_server.url
    ledger = Ledger()
    runner = DirectRunner(redis_url, prefix, ledger, lease_ms=LEASE_MS)
    rescuer = DirectRunner(redis_url, prefix, Ledger(), queue="normalizer", lease_ms=LEASE_MS)
    store = private_redis_server.client()
    with Background(redis_url, dsn, prefix, lease_ms=LEASE_MS) as background:
        for _ in range(300):  # a backlog, so runners always find work
            task_id = str(uuid.uuid4())
            assert runner.push(task_id) == "ok"
            ledger.pushed[task_id] = time.monotonic()
        load = Load(ledger, runner.push, runner.pop_and_complete, push_rate=150, max_seconds=40).start()
        try:
            time.sleep(1)
            fault_start = time.monotonic()
            faults = 0

            # Three runners on the load's own queue die holding a task: the load's runners
            # must pick those up after the lease expires.
            victims = []
            for _ in range(3):
                proc, held = start_runner(redis_url, prefix, "boefje")
                ledger.pops[held["id"]] += 1
                kill9(proc)
                faults += 1
                victims.append(held)

            # One more, step by step, on a queue the load leaves alone.
            pushed = rescuer.queue.push(organisation="org1", priority=5, data={**normalizer_data(), "id": str(uuid.uuid4())})
            ledger.pushed[pushed.id] = time.monotonic()
            proc, held = start_runner(redis_url, prefix, "normalizer")
            assert held["id"] == pushed.id
            ledger.pops[held["id"]] += 1
            kill9(proc)
            faults += 1
            victims.append(held)
            keys = rescuer.client.commands.keys("normalizer")

            def record():
                raw = store.hget(keys.tasks, pushed.id)
                return decode_record(raw, task_id=pushed.id, queue_id="normalizer") if raw else None

            wait_for(lambda: record().tries >= 1, 10, "the reaper to take the dead runner's task back")
            assert record().status == "queued"
            with pytest.raises(StaleLease):  # taken back: the old token is stale
                rescuer.queue.patch(pushed.id, {"status": "completed"}, token=held["lease"])
            [again] = rescuer.queue.pop(limit=1)
            assert again.id == pushed.id and again.lease != held["lease"]
            ledger.pops[again.id] += 1
            with pytest.raises(StaleLease):  # now another runner's: still stale
                rescuer.queue.patch(pushed.id, {"status": "failed"}, token=held["lease"])
            assert rescuer.queue.patch(pushed.id, {"status": "completed"}, token=again.lease).status == "completed"
            ledger.completed[pushed.id] += 1

            # The load's runners complete the three others.
            wait_for(lambda: all(ledger.completed[v["id"]] for v in victims), 15, "the load to complete the victims' tasks")
            fault_end = time.monotonic()
            time.sleep(1)
        finally:
            load.stop()

        # Late PATCHes of the dead runners, once their tasks finished: nothing changes.
        late_refused = 0
        for held in victims:
            queue = rescuer.queue if held["id"] == pushed.id else runner.queue
            try:
                answer = queue.patch(held["id"], {"status": "failed"}, token=held["lease"])
            except StaleLease:
                answer = "stale"
            assert answer in ("stale", None), f"a late PATCH with a dead runner's token was applied: {answer}"
            late_refused += 1

        result = audit("runner kill -9", ledger, background, redis_url, dsn, prefix)
        result.extra.update(victims=len(victims), reaped=background.reaped, late_patches_refused=late_refused)
        report(result, ledger, fault_start, fault_end, faults)
        assert ledger.ops_between(fault_start, fault_end, "complete") > 0, "the load stalled during the fault"
        for held in victims:
            assert ledger.pops[held["id"]] >= 2, "a dead runner's task was not handed out again"
            assert ledger.completed[held["id"]] == 1
        result.check()
    runner.close()
    rescuer.close()


def test_a_dead_runners_late_patch_over_http_is_refused_after_its_task_finished(private_redis_server, dsn, prefix):
    """The dead runner's PATCH may come after its task was completed by another runner and
    left Redis (Postgres holds it): with its stale token it must still be refused, not
    rewrite the history."""
    import httpx
    import psycopg

    redis_url = private_redis_server.url
    api = ApiProcess(redis_url, dsn, prefix, lease_s=1)
    with Background(redis_url, dsn, prefix, lease_ms=1000) as background:
        try:
            api.start()
            with httpx.Client(base_url=api.url, timeout=10) as http:
                task_id = str(uuid.uuid4())
                body = {"id": task_id, "organisation": "org1", "priority": 5, "data": task_data(task_id)}
                assert http.post("/schedulers/boefje/push", json=body).status_code == 201
                first = http.post("/schedulers/boefje/pop?limit=1")
                dead_token = first.headers["x-lease-token"]
                assert first.json()["results"][0]["id"] == task_id
                # The runner dies; the lease expires and the reaper puts the task back.
                wait_for(lambda: http.get(f"/tasks/{task_id}").json()["status"] == "queued", 10, "the reap")
                second = http.post("/schedulers/boefje/pop?limit=1")
                assert second.json()["results"][0]["id"] == task_id
                token = second.headers["x-lease-token"]
                stale = http.patch(f"/tasks/{task_id}", json={"status": "failed"}, headers={"X-Lease-Token": dead_token})
                assert stale.status_code == 409, "stale token refused while the task is live"
                done = http.patch(f"/tasks/{task_id}", json={"status": "completed"}, headers={"X-Lease-Token": token})
                assert done.status_code == 200
                assert background.drained(10)
                assert private_redis_server.client().hget(f"{prefix}:{{boefje}}:tasks", task_id) is None

                late = http.patch(f"/tasks/{task_id}", json={"status": "failed"}, headers={"X-Lease-Token": dead_token})
                with psycopg.connect(dsn) as conn:
                    [(status,)] = conn.execute("SELECT status FROM tasks WHERE id = %s", [task_id]).fetchall()
                log(f"[faults] late PATCH over HTTP with a dead runner's token after the task finished: "
                    f"{late.status_code}, history now says {status}")
                assert status == "completed", "a dead runner's late PATCH rewrote a finished task's history"
                assert late.status_code == 409, f"a stale lease token was accepted: {late.status_code} {late.text}"
        finally:
            api.close()


def test_a_runner_killed_holding_a_limited_task_frees_its_groups_slot_at_lease_expiry(private_redis_server, dsn, prefix):
    """Fairness on, a concurrency-1 group: while the dead runner's lease runs the group is
    full (the other organisation's task of it waits, the rest flows); at expiry the reaper
    frees the slot and puts the task back in its group and the fair structures: both of the
    group's tasks are then handed out, one at a time, each once."""
    features = {"fairness": "organisation", "limits": parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 1}])}
    redis_url = private_redis_server.url
    direct = DirectRunner(redis_url, prefix, Ledger(), lease_ms=LEASE_MS, features=features)
    with Background(redis_url, dsn, prefix, lease_ms=LEASE_MS, features=features) as background:
        nmap = [
            direct.queue.push(organisation=org, priority=2 + i, data=boefje_data("nmap", organization=org)).id
            for i, org in enumerate(("a", "b"))
        ]  # fmt: skip
        other = direct.queue.push(organisation="b", priority=50, data=boefje_data("dns-records", organization="b")).id
        proc, held = start_runner(redis_url, prefix, "boefje", "organisation")
        assert held["id"] == nmap[0]
        kill9(proc)
        [flowing] = direct.queue.pop(limit=1)
        assert flowing.id == other  # the group is full: the other boefje's task, not the group's
        direct.queue.patch(other, {"status": "completed"}, token=flowing.lease)
        assert direct.queue.pop(limit=1) == []
        wait_for(lambda: background.reaped >= 1, 10, "the reaper to take the dead runner's task back")
        handed = []
        for _ in range(2):
            [task] = direct.queue.pop(limit=1)
            assert direct.queue.pop(limit=1) == []  # one of the group at a time
            handed.append(task.id)
            direct.queue.patch(task.id, {"status": "completed"}, token=task.lease)
        assert sorted(handed) == sorted(nmap)
        with pytest.raises(StaleLease):
            direct.queue.patch(nmap[0], {"status": "failed"}, token=held["lease"])
        log(f"[faults] runner kill -9 holding a limited task, fairness on: handed out after expiry {handed}")
    direct.close()
