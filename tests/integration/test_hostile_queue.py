"""Hostile input against the queue itself, on real servers: the direct client's ACL user runs
redisched's scripts on redisched's keys and nothing else; what it can still write raw (a
corrupt record, junk members, a stale member, a forged event) is moved aside by the script
that meets it, or by the snapshotter, and the queue goes on; order keys hold every datetime
the API accepts.

``pytest -s`` prints one line per case (README "Reliability", Hostile input)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import redis
import redis.asyncio as aredis
from redis.exceptions import NoPermissionError

from redisched.client import Client
from redisched.config import Settings
from redisched.history.snapshotter import decode_entries
from redisched.queue.acl import acl_rules
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from tests.acceptance.harness import api_client, boefje_push, db_dsn, template_db  # noqa: F401
from tests.factories import boefje_data
from tests.support.servers import private_redis

PREFIX = "rs"
KEYS = QueueKeys(PREFIX, "boefje")
RUNNER_FILTER = {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": ["nmap"]}]}


@pytest.fixture
def acl_redis() -> Iterator[tuple[str, str]]:
    """A private server with a direct-client user made with acl_rules: (admin URL, its URL)."""
    with private_redis() as url:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "runner", *acl_rules("s3cret", PREFIX))
        Client(admin, QueueLayout(prefix=PREFIX)).load_functions()  # what the service does at start
        admin.close()
        yield url, url.replace("redis://", "redis://runner:s3cret@")


def _client(url: str) -> Client:
    return Client(redis.Redis.from_url(url), QueueLayout(prefix=PREFIX))


def _pushed_and_popped(queue, count: int) -> list:
    for i in range(count):
        queue.push(organisation="org1", priority=1 + i, data=boefje_data("nmap"))
    popped = [task for _ in range(count) for task in queue.pop(RUNNER_FILTER)]  # one a pop: no dedup key
    assert len(popped) == count
    return popped


def _quarantine_reasons(admin: redis.Redis) -> dict[str, str]:
    return {k.decode(): json.loads(v)["reason"] for k, v in admin.hgetall(KEYS.quarantine).items()}


def test_the_direct_client_user_runs_the_scripts_and_nothing_else(acl_redis):
    _, user_url = acl_redis
    client = _client(user_url)
    queue = client.queue("boefje")
    task = queue.push(organisation="org1", priority=5, data=boefje_data("nmap"))
    assert [t.id for t in queue.peek(RUNNER_FILTER)] == [task.id]
    [popped] = queue.pop(RUNNER_FILTER)
    assert queue.patch(popped.id, {"status": "completed"}, token=popped.lease).status == "completed"
    raw = client.redis
    refused = {
        "EVAL a busy loop": lambda: raw.eval("while true do end", 0),
        "EVALSHA": lambda: raw.evalsha("e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 0),
        "SCRIPT FLUSH": lambda: raw.script_flush(),
        "FUNCTION LOAD": lambda: raw.function_load("#!lua name=x\nredis.register_function('x', function() end)"),
        "FUNCTION FLUSH": lambda: raw.execute_command("FUNCTION", "FLUSH"),
        "FLUSHALL": raw.flushall,
        "KEYS": lambda: raw.keys("*"),
        "CONFIG SET": lambda: raw.config_set("busy-reply-threshold", "100000"),
        "another application's key": lambda: raw.set("other:key", "1"),
        "XTRIM the history stream": lambda: raw.xtrim(KEYS.events, maxlen=0),
    }
    for name, attempt in refused.items():
        with pytest.raises(NoPermissionError):
            attempt()
    print(f"hostile ACL user: refused {len(refused)} of {len(refused)}: {', '.join(refused)}")
    client.close()


def test_a_corrupt_record_is_moved_aside_and_pop_and_get_go_on(acl_redis):
    admin_url, user_url = acl_redis
    client = _client(user_url)
    queue = client.queue("boefje")
    tasks = [queue.push(organisation="org1", priority=1 + i, data=boefje_data("nmap")) for i in range(4)]
    raw = client.redis
    raw.hset(KEYS.tasks, tasks[0].id, "{not json")  # the user's raw writes are within its ACL
    shape = json.loads(raw.hget(KEYS.tasks, tasks[1].id))
    shape["p"] = 7  # the priority (records.py, STORED_NAMES)
    raw.hset(KEYS.tasks, tasks[1].id, json.dumps(shape))
    raw.hset(KEYS.data, tasks[2].id, "[truncated")
    async def get(task_id: str):
        queues = TaskQueues(aredis.Redis.from_url(admin_url), QueueLayout(prefix=PREFIX))
        try:
            return await queues.get(task_id)
        finally:
            await queues.redis.aclose()

    assert asyncio.run(get(tasks[0].id)) is None  # GET /tasks/{id} then looks in the history
    t0 = time.perf_counter()
    [popped] = queue.pop(RUNNER_FILTER)
    elapsed = time.perf_counter() - t0
    assert popped.id == tasks[3].id
    admin = redis.Redis.from_url(admin_url)
    reasons = _quarantine_reasons(admin)
    assert reasons == {
        tasks[0].id: "not JSON",
        tasks[1].id: "field priority is not a string",
        tasks[2].id: "its data is not JSON",
    }
    assert int(admin.hget(KEYS.meta, "quarantined")) == 3
    assert not admin.hexists(KEYS.tasks, tasks[0].id)
    assert queue.pop() == []  # the queue's own members of the three, met now, are removed
    assert admin.zcard(KEYS.queue) == 0
    print(f"hostile ACL user: 3 corrupt records (bad JSON, bad shape, bad data) moved aside, "
          f"the pop went on to the 4th task in {elapsed * 1000:.1f} ms")  # fmt: skip
    client.close()
    admin.close()


def test_a_popped_record_changed_by_hand_is_checked_in_full_when_patched(acl_redis):
    """A pop vouches for the record it saves (lua/includes/common.lua, vouch_for): that JSON,
    loaded again under its id, skips the check. A record changed by hand since, or the same
    JSON under another id, is checked in full and moved aside."""
    admin_url, user_url = acl_redis
    client = _client(user_url)
    queue = client.queue("boefje")
    popped = _pushed_and_popped(queue, 3)
    raw = client.redis
    vouched = [raw.hget(KEYS.tasks, task.id) for task in popped]
    shape = json.loads(vouched[0])
    shape["s"] = "lost"  # the status (records.py, STORED_NAMES): one field, the rest as vouched
    raw.hset(KEYS.tasks, popped[0].id, json.dumps(shape))
    raw.hset(KEYS.tasks, popped[1].id, vouched[1].replace(b'"o":"org1"', b'"o":7'))
    not_an_id = popped[2].id.upper()  # the vouched JSON, byte for byte, under an id no UUID is
    raw.hset(KEYS.tasks, not_an_id, vouched[2])
    assert queue.patch(popped[0].id, {"status": "completed"}, token=popped[0].lease) is None
    assert queue.patch(popped[1].id, {"status": "completed"}, token=popped[1].lease) is None
    assert queue.patch(not_an_id, {"status": "completed"}) is None
    # as vouched, it is patched without a look
    assert queue.patch(popped[2].id, {"status": "completed"}, token=popped[2].lease).status == "completed"
    admin = redis.Redis.from_url(admin_url)
    reasons = _quarantine_reasons(admin)
    assert reasons == {
        popped[0].id: "unknown status",
        popped[1].id: "field organisation is not a string",
        not_an_id: "an id is not a UUID",
    }
    client.close()
    admin.close()


def test_a_record_vouched_for_by_a_status_patch_is_checked_again_once_changed(acl_redis):
    """A patch of the status alone vouches for what it saves, as a pop does; a patch of other
    fields does not: what it wrote (here a trusted caller's created_at that is no time) is
    checked in full on the next load."""
    admin_url, user_url = acl_redis
    client = _client(user_url)
    queue = client.queue("boefje")
    popped = _pushed_and_popped(queue, 2)
    running = queue.patch(popped[0].id, {"status": "running"}, token=popped[0].lease)
    assert running.status == "running"
    raw = client.redis
    shape = json.loads(raw.hget(KEYS.tasks, popped[0].id))
    shape["c"] = "yesterday"  # created_at (records.py, STORED_NAMES)
    raw.hset(KEYS.tasks, popped[0].id, json.dumps(shape))
    assert queue.patch(popped[0].id, {"status": "completed"}, token=popped[0].lease) is None
    redated = client.commands.patch("boefje", popped[1].id, {}, token=popped[1].lease)
    redated.args[2] = json.dumps({"created_at": "yesterday"})  # records.py writes µs digits
    assert raw.execute_command(*redated.command())[0][0]  # saved
    assert queue.patch(popped[1].id, {"status": "completed"}, token=popped[1].lease) is None
    admin = redis.Redis.from_url(admin_url)
    reasons = _quarantine_reasons(admin)
    assert reasons == {popped[0].id: "created_at is malformed", popped[1].id: "created_at is malformed"}
    client.close()
    admin.close()


def test_junk_members_do_not_hide_the_tasks_waiting_behind_them(acl_redis):
    admin_url, user_url = acl_redis
    client = _client(user_url)
    queue = client.queue("boefje")
    real = [queue.push(organisation="org1", priority=100, data=boefje_data("nmap")) for _ in range(2)]
    raw = client.redis
    # packed order keys (35 B) ordered before every task's, naming no task
    junk = {bytes(13) + i.to_bytes(6, "big") + uuid.uuid4().bytes: 0 for i in range(2000)}
    raw.zadd(KEYS.queue, junk)
    # and in its pair index (lua/includes/common.lua: "4:nmap" is boefje nmap, no image), the
    # pair's head pointed at the first of them
    raw.zadd(KEYS.pairs, {b"4:nmap\0" + member: 0 for member in junk})
    raw.hset(KEYS.heads, "4:nmap", min(junk))
    pops, found = 0, []
    while len(found) < 2 and pops < 60:
        found += queue.pop(RUNNER_FILTER if pops % 2 else None)
        pops += 1
    assert sorted(t.id for t in found) == sorted(t.id for t in real)
    admin = redis.Redis.from_url(admin_url)
    removed = int(admin.hget(KEYS.meta, "stray_members"))
    print(f"hostile ACL user: 2,000 junk members in the queue and its pair index: both waiting tasks "
          f"popped within {pops} pops, {removed} members removed")  # fmt: skip
    assert pops < 60 and removed >= 2000
    client.close()
    admin.close()


def test_a_stale_member_never_hands_a_task_out_twice(acl_redis):
    _, user_url = acl_redis
    client = _client(user_url)
    queue = client.queue("boefje")
    task = queue.push(organisation="org1", priority=3, data=boefje_data("nmap"))
    [popped] = queue.pop()
    client.redis.zadd(KEYS.queue, {task.order: 0})  # its old place, written back raw
    client.redis.zadd(KEYS.pairs, {b"4:nmap\0" + task.order: 0})  # and in the pair index, as its head
    client.redis.hset(KEYS.heads, "4:nmap", task.order)
    assert queue.pop() == [] and queue.pop(RUNNER_FILTER) == []
    assert client.redis.zcard(KEYS.queue) == 0 and client.redis.zcard(KEYS.pairs) == 0
    assert client.redis.hlen(KEYS.heads) == 0
    assert queue.patch(popped.id, {"status": "completed"}, token=popped.lease).status == "completed"
    client.close()


def test_a_forged_event_with_a_rev_ahead_of_its_stream_time_is_quarantined_not_applied():
    now_ms = int(time.time() * 1000)
    record = {"id": str(uuid.uuid4()), "scheduler_id": "boefje", "organisation": "o", "priority": "1",
              "status": "completed", "type": "boefje", "created_at": f"{now_ms * 1000:016d}",
              "modified_at": f"{now_ms * 1000:016d}", "pk": "09223372036854775809"}  # fmt: skip
    honest = {**record, "rev": str(now_ms * 1000 + 5)}
    forged = {**record, "rev": "9999999999999999"}  # would win over every later version
    entries = [
        (f"{now_ms}-0", {b"op": b"patch", b"rec": json.dumps(honest).encode()}),
        (f"{now_ms}-1", {b"op": b"patch", b"rec": json.dumps(forged).encode()}),
    ]
    decoded, poison = decode_entries(entries)
    assert [e.id for e in decoded] == [f"{now_ms}-0"]
    assert [p.entry for p in poison] == [f"{now_ms}-1"] and "forged event" in poison[0].reason
    assert poison[0].task_id is None  # it holds the real task's later events back from nothing


# --- order keys ------------------------------------------------------------------------------

EDGES = [
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01T00:00:00+00:00",
    "1900-06-01T12:00:00.000001+00:00",
    "1937-12-31T23:59:59+00:00",
    "2286-11-20T17:46:40+00:00",  # 10^16 µs: the first instant past 16 digits
    "2286-11-20T17:46:39.999999+00:00",
    "1970-01-01T00:00:00+00:00",
    "1969-12-31T23:59:59.999999+00:00",
]


async def test_order_keys_hold_every_datetime_the_api_accepts(settings):  # noqa: F811
    async with api_client(settings) as api:
        ids = []
        for i, moment in enumerate(EDGES):
            pushed = await api.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|edge{i}.example", priority=7))
            assert pushed.status_code == 201, pushed.text
            patched = await api.patch(f"/tasks/{pushed.json()['id']}", json={"created_at": moment})
            assert patched.status_code == 200, patched.text
            assert datetime.fromisoformat(patched.json()["created_at"]) == datetime.fromisoformat(moment)
            ids.append(pushed.json()["id"])
        beyond = await api.patch(f"/tasks/{ids[0]}", json={"created_at": "9999-12-31T23:00:00-02:00"})
        assert beyond.status_code == 422, beyond.text  # year 10000 in UTC: no datetime holds it
        by_time = [i for _, i in sorted(zip((datetime.fromisoformat(m) for m in EDGES), ids))]
        popped = []
        for _ in EDGES:
            response = await api.post("/schedulers/boefje/pop")
            assert response.status_code == 200, response.text
            body = response.json()
            popped += [t["id"] for t in body["results"]]
        assert popped == by_time, "same priority: oldest first, across every edge"
        print(f"hostile order keys: {len(EDGES)} edges from year 1 to 9999 popped in created_at order; "
              f"year 10000 in UTC: {beyond.status_code}")  # fmt: skip


@pytest.fixture
def settings(redis_url: str, db_dsn: str, key_prefix: str) -> Settings:  # noqa: F811
    return Settings(redis_url=redis_url, db_uri=db_dsn, key_prefix=key_prefix)


def test_order_time_sorts_like_time():
    from redisched.queue.records import order_time, order_time_us
    from redisched.models import datetime_to_us

    moments = sorted(datetime.fromisoformat(m) for m in EDGES) + [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    moments.sort()
    encoded = [order_time(datetime_to_us(m)) for m in moments]
    assert encoded == sorted(encoded)
    assert [order_time_us(e) for e in encoded] == [datetime_to_us(m) for m in moments]
