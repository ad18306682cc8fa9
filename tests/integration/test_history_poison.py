"""What the history cannot hold: refused at the edge every writer passes (HTTP, the queue the
direct client and the schedulers use, the schedule store), and, when a trusted writer gets it
into an event stream anyway, quarantined so that the queue's history goes on.

Real Redis and Postgres; the API with its snapshotter running (tests/acceptance/harness.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import string
import subprocess
import sys
import time
import uuid

import msgspec
import psycopg
import pytest

from redisched import limits
from redisched.errors import BadRequest
from redisched.history import quarantine
from redisched.queue.keys import QueueKeys
from redisched.queue.records import TaskRecord, encode_record, priority_key
from tests.acceptance.harness import ROOT, api, db_dsn, settings, template_db  # noqa: F401

LAG_TARGET = 0.5  # seconds from a 201 to the row in Postgres, with poison in the stream before it


def noise(length: int) -> str:
    """Text Postgres cannot compress (an index entry must fit as it is)."""
    return "".join(random.choices(string.ascii_letters + string.digits, k=length))


def boefje(ooi: str = "Hostname|internet|h.example", **extra) -> dict:
    return {"boefje": {"id": "dns-records"}, "input_ooi": ooi, "organization": "org1", **extra}


def report(recipe: str) -> dict:
    return {"organisation_id": "org1", "report_recipe_id": recipe}


async def push(api, data: dict, scheduler: str = "boefje", organisation: str = "org1"):
    return await api.post(f"/schedulers/{scheduler}/push", json={"organisation": organisation, "priority": 5, "data": data})


async def stored(api, task_id: str):
    await api.services.history_caught_up()
    return await api.services.tasks.get(task_id)


async def seconds_to_history(api) -> float:
    """Push an ordinary task; how long until Postgres has it."""
    response = await push(api, boefje(f"Hostname|internet|{uuid.uuid4()}.example"))
    assert response.status_code == 201, response.text
    started, task_id = time.monotonic(), response.json()["id"]
    while await api.services.tasks.get(task_id) is None:
        assert time.monotonic() - started < 10, "an ordinary task never reached the history"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def quarantined(api, expected: int = 1, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(letters := (await api.get("/history/quarantine")).json()) < expected:
        assert time.monotonic() < deadline, f"{len(letters)} quarantined, expected {expected}"
        await asyncio.sleep(0.02)
    return letters


def forged(data: dict | str, **fields) -> TaskRecord:
    task_id, now = str(uuid.uuid4()), int(time.time() * 1_000_000)
    values = dict(
        id=task_id, scheduler_id="boefje", organisation="org1", priority="5", status="queued", type="boefje",
        hash=uuid.uuid4().hex, data=data if isinstance(data, str) else msgspec.json.encode(data).decode(),
        created_at=str(now), modified_at=str(now), pk=priority_key(5), rev=str(now),
    )  # fmt: skip
    return TaskRecord(**{**values, **fields})


async def write_event(api, key_prefix: str, record: TaskRecord) -> None:
    """What a trusted writer with raw stream access could append (the Lua scripts' shape)."""
    keys = QueueKeys(key_prefix, "boefje")
    data, record = record.data, msgspec.structs.replace(record, data=None)
    await api.services.redis.xadd(keys.events, {"op": "push", "rec": encode_record(record), "data": data})


# --- the edge ------------------------------------------------------------------------------

EDGES = [  # (scheduler, field named in the 400, limit, data or organisation for a value)
    ("boefje", "data.input_ooi", limits.MAX_INDEXED_STRING_BYTES, lambda v: {"data": boefje(v)}),
    ("report", "data.report_recipe_id", limits.MAX_INDEXED_STRING_BYTES, lambda v: {"data": report(v)}),
    ("boefje", "organisation", limits.MAX_COLUMN_BYTES, lambda v: {"data": boefje(str(uuid.uuid4())), "organisation": v}),
]


@pytest.mark.parametrize(("scheduler", "field", "limit", "item"), EDGES, ids=[e[1] for e in EDGES])
async def test_an_indexed_value_at_its_limit_is_stored_and_one_byte_more_is_refused(api, scheduler, field, limit, item):
    for value in (noise(limit), "é" * (limit // 2)):  # bytes of UTF-8, not characters
        body = {"organisation": "org1", "priority": 5, **item(value)}
        response = await api.post(f"/schedulers/{scheduler}/push", json=body)
        assert response.status_code == 201, response.text
        row = await stored(api, response.json()["id"])
        assert row is not None
        assert value in (row.organisation, msgspec.json.decode(row.data).get(field.removeprefix("data.")))

    body = {"organisation": "org1", "priority": 5, **item(noise(limit - 1) + "é")}
    refused = await api.post(f"/schedulers/{scheduler}/push", json=body)
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        f"Bad request error occurred: malformed item: {field} must be at most {limit} bytes (UTF-8)"
        + (": Postgres indexes it" if field.startswith("data.") else "")
    )


async def test_data_at_the_size_limit_is_stored_and_one_byte_more_is_refused(api):
    """Through the queue the direct client and the schedulers use (HTTP bodies stop at 1 MiB
    before that: REDISCHED_MAX_BODY_BYTES)."""
    task_id = str(uuid.uuid4())  # given and equal to data.id: data is stored as sent
    empty = len(msgspec.json.encode(boefje(dispatches=[""], id=task_id)))
    filler = "x" * (limits.MAX_DATA_BYTES - empty)
    data = boefje(dispatches=[filler], id=task_id)
    assert len(msgspec.json.encode(data)) == limits.MAX_DATA_BYTES
    record = await api.services.queues.push("boefje", organisation="org1", priority=5, data=data, task_id=task_id)
    row = await stored(api, record.id)
    assert row is not None and msgspec.json.decode(row.data)["dispatches"] == [filler]

    other = str(uuid.uuid4())
    with pytest.raises(BadRequest, match=f"data must be at most {limits.MAX_DATA_BYTES} bytes of JSON"):
        await api.services.queues.push("boefje", organisation="org1", priority=5, data=boefje(dispatches=[filler + "x"], id=other), task_id=other)


async def test_a_nul_anywhere_is_refused_at_every_writer(api):
    nested = await push(api, boefje(dispatches=[{"note": "a\u0000b"}]))
    assert nested.status_code == 400
    assert nested.json()["detail"] == "Bad request error occurred: malformed item: data.dispatches[0].note must not contain NUL (\\u0000) characters"
    key = await push(api, boefje(dispatches=[{"a\u0000": 1}]))
    assert key.status_code == 400 and "a key of data.dispatches[0]" in key.json()["detail"]
    with pytest.raises(BadRequest, match="NUL"):
        await api.services.queues.push("boefje", organisation="org1", priority=5, data=boefje("a\u0000"))
    literal = await push(api, boefje("backslash \\u0000 is text"))
    assert literal.status_code == 201

    schedule = {"scheduler_id": "report", "organisation": "org1", "data": report("r1"), "schedule": "0 * * * *"}
    assert (await api.post("/schedules", json={**schedule, "data": {**report("r\u0000")}})).status_code == 400
    assert (await api.post("/schedules", json={**schedule, "data": {**report("r1"), "x": ["\u0000"]}})).status_code == 400
    created = await api.post("/schedules", json=schedule)
    assert created.status_code == 201
    patched = await api.patch(f"/schedules/{created.json()['id']}", json={"data": report("r\u0000")})
    assert patched.status_code == 400 and "data.report_recipe_id" in patched.json()["detail"]
    too_long = await api.patch(f"/schedules/{created.json()['id']}", json={"hash": noise(limits.MAX_COLUMN_BYTES + 1)})
    assert too_long.status_code == 400 and "hash must be at most 1024 bytes" in too_long.json()["detail"]

    task = literal.json()
    assert (await api.patch(f"/tasks/{task['id']}", json={"data": boefje("\u0000")})).status_code == 400
    assert (await api.patch(f"/tasks/{task['id']}", json={"type": noise(2000)})).status_code == 400
    assert (await api.patch(f"/tasks/{task['id']}", json={"data": boefje(noise(3000))})).status_code == 400
    assert (await api.patch(f"/tasks/{task['id']}", json={"data": {"input_ooi": list(range(200))}})).status_code == 400
    row = await stored(api, task["id"])
    assert msgspec.json.decode(row.data)["input_ooi"] == "backslash \\u0000 is text"


# --- behind the edge: poison in the stream -------------------------------------------------

POISON = {
    "long indexed field": lambda: forged(boefje(noise(3000))),  # index row size exceeds btree maximum
    "NUL in data": lambda: forged(boefje("a\u0000b")),  # jsonb refuses \u0000
    "number past Postgres' numeric": lambda: forged('{"boefje": {"id": "b"}, "n": ' + "9" * 140_000 + "}"),
    "priority past bigint": lambda: forged(boefje(), priority="9" * 30),  # a row Postgres refuses
}


@pytest.mark.parametrize("kind", list(POISON))
async def test_a_poison_event_is_quarantined_and_the_queue_goes_on(api, key_prefix, kind, caplog):
    poison = POISON[kind]()
    await write_event(api, key_prefix, poison)
    lag = await seconds_to_history(api)
    print(f"\nhostile input: poison ({kind}) then an ordinary task: in history after {lag * 1000:.0f} ms")
    assert lag < LAG_TARGET

    [letter] = await quarantined(api)
    assert (letter["scheduler_id"], letter["task_id"], letter["op"]) == ("boefje", poison.id, "push")
    assert "Postgres refused it" in letter["reason"] and "SQLSTATE" in letter["reason"]
    assert await api.services.tasks.get(poison.id) is None
    assert any(r.levelname == "ERROR" and poison.id in r.message for r in caplog.records)
    metrics = (await api.get("/metrics")).text
    assert 'redisched_history_quarantined{scheduler_id="boefje"} 1.0' in metrics
    assert 'redisched_snapshot_lag_seconds{scheduler_id="boefje"} 0.0' in metrics


async def test_max_size_data_in_one_batch_reaches_history_and_the_queue_goes_on(api, key_prefix):
    count = 12  # 12 MiB of data: more than one transaction's worth (batch_bytes)
    filler = noise(limits.MAX_DATA_BYTES - 200)
    records = [forged(boefje(dispatches=[filler])) for _ in range(count)]
    started = time.monotonic()
    for record in records:
        await write_event(api, key_prefix, record)
    lag = await seconds_to_history(api)
    print(f"\nhostile input: {count} events of ~1 MiB data then an ordinary task: in history after "
          f"{(time.monotonic() - started) * 1000:.0f} ms from the first")  # fmt: skip
    assert lag < 10 * LAG_TARGET
    for record in records:
        assert await api.services.tasks.get(record.id) is not None
    assert (await api.get("/history/quarantine")).json() == []


async def test_a_refused_row_is_listed_and_lands_when_retried_after_the_cause_is_fixed(api, db_dsn, key_prefix):
    async with await psycopg.AsyncConnection.connect(db_dsn, autocommit=True) as conn:
        await conn.execute("ALTER TABLE tasks ADD CONSTRAINT no_refused CHECK (organisation <> 'refused-org')")
    response = await push(api, boefje(), organisation="refused-org")
    assert response.status_code == 201
    task_id = response.json()["id"]
    [letter] = await quarantined(api)
    assert letter["task_id"] == task_id and "CheckViolation (SQLSTATE 23514)" in letter["reason"]
    assert await seconds_to_history(api) < LAG_TARGET
    by_org = {"filters": [{"column": "organisation", "operator": "eq", "value": "refused-org"}]}
    [popped] = (await api.post("/schedulers/boefje/pop", json=by_org)).json()["results"]
    assert popped["id"] == task_id
    assert (await api.patch(f"/tasks/{task_id}", json={"status": "completed"})).status_code == 200
    # The task's later events join its push: Postgres gets none of them, Redis keeps the task.
    letters = await quarantined(api, 3)
    assert [(entry["op"], entry["reason"]) for entry in letters[1:]] == [("pop", quarantine.HELD), ("patch", quarantine.HELD)]
    assert await api.services.tasks.get(task_id) is None
    assert (await api.get(f"/tasks/{task_id}")).json()["status"] == "completed"

    listed = _cli(api, key_prefix, "list")
    assert task_id in listed and letter["id"] in listed
    async with await psycopg.AsyncConnection.connect(db_dsn, autocommit=True) as conn:
        await conn.execute("ALTER TABLE tasks DROP CONSTRAINT no_refused")
    retried = await api.post("/history/quarantine/retry", json={"ids": [letter["id"]]})
    assert retried.status_code == 200 and retried.json() == {"retried": 3}
    row = await stored(api, task_id)
    assert (row.organisation, row.status.value, msgspec.json.decode(row.data)["input_ooi"]) == ("refused-org", "completed", boefje()["input_ooi"])
    assert (await api.get("/history/quarantine")).json() == []
    assert (await api.get(f"/tasks/{task_id}")).json()["status"] == "completed"
    assert _cli(api, key_prefix, "retry") == "retried 0 events"


async def test_a_retry_that_fails_again_comes_back_to_the_quarantine(api, key_prefix):
    poison = forged(boefje("a\u0000b"))
    await write_event(api, key_prefix, poison)
    [first] = await quarantined(api)
    assert (await api.post("/history/quarantine/retry")).json() == {"retried": 1}
    await asyncio.sleep(0.3)
    [again] = await quarantined(api)
    assert again["task_id"] == poison.id and again["id"] != first["id"]
    refused = await api.post("/history/quarantine/retry", json={"ids": "all"})
    assert refused.status_code == 422


def _cli(api, key_prefix: str, *args: str) -> str:
    settings = api.services.settings
    env = {**os.environ, "REDISCHED_REDIS_URL": settings.redis_url, "SCHEDULER_DB_URI": settings.db_uri,
           "REDISCHED_KEY_PREFIX": key_prefix}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "redisched", "quarantine", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_failure_that_is_not_the_rows_is_retried_not_quarantined(api, db_dsn):
    """A missing table (42P01) is Postgres' state, not the row's: the events wait, then land."""
    async with await psycopg.AsyncConnection.connect(db_dsn, autocommit=True) as conn:
        await conn.execute("ALTER TABLE tasks RENAME TO tasks_away")
        try:
            response = await push(api, boefje())
            assert response.status_code == 201
            await asyncio.sleep(0.5)
            assert (await api.get("/history/quarantine")).json() == []
        finally:
            await conn.execute("ALTER TABLE tasks_away RENAME TO tasks")
    assert await stored(api, response.json()["id"]) is not None
    assert (await api.get("/history/quarantine")).json() == []


async def test_the_quarantine_on_every_backend(backend_redis, partitions, key_prefix):
    """Dead letters, held tasks and retries on one Redis, a cluster and a partitioned cluster."""
    from redisched.history.quarantine import PoisonEvent, held_tasks, listing, retry
    from redisched.queue.layout import QueueLayout

    layout = QueueLayout(key_prefix, partitions)
    keys = layout.of("boefje")[partitions - 1]
    poisoned = [PoisonEvent(f"1-{i}", {"op": "push", "rec": f"rec{i}", "data": "{}"}, f"task{i % 2}", "refused") for i in range(3)]
    await quarantine.quarantine(backend_redis, keys, poisoned)
    assert await held_tasks(backend_redis, keys, ["task0", "task1", "task2"]) == {"task0", "task1"}
    letters = await listing(backend_redis, layout)
    assert [(letter.entry, letter.task_id) for letter in letters] == [("1-0", "task0"), ("1-1", "task1"), ("1-2", "task0")]
    assert (await quarantine.counts(backend_redis, layout))["boefje"] == 3

    assert await retry(backend_redis, layout, [letters[0].id, "boefje:99:1-0", "nonsense"]) == 2  # task0's two
    assert await held_tasks(backend_redis, keys, ["task0", "task1"]) == {"task1"}
    back = await backend_redis.xrange(keys.events)
    assert [fields[b"rec"] for _, fields in back] == [b"rec0", b"rec2"]
    assert await retry(backend_redis, layout) == 1
    assert await listing(backend_redis, layout) == [] and await held_tasks(backend_redis, keys, ["task1"]) == set()


# Events of the event form that decode (decode_record) but hold what no task can be
# (TaskRecord.to_task): a status Postgres took as text made every read of the row fail.
UNFIT = {
    "rev not a number": lambda: forged(boefje(), rev="abc", modified_at="abc"),
    "rev of 5,000 digits": lambda: forged(boefje(), rev="1" * 5000),
    "id not a UUID": lambda: forged(boefje(), id="not-a-uuid"),
    "schedule_id not a UUID": lambda: forged(boefje(), schedule_id="not-a-uuid"),
    "unknown status": lambda: forged(boefje(), status="exploded"),
    "finished with an unknown status": lambda: forged(boefje(), status="completed", created_at="x"),
    "created_at not a time": lambda: forged(boefje(), created_at="yesterday"),
    "modified_at not a time": lambda: forged(boefje(), modified_at="-" + "9" * 40),
}


@pytest.mark.parametrize("kind", list(UNFIT))
async def test_an_event_that_decodes_but_is_no_task_row_is_quarantined_and_the_queue_goes_on(api, key_prefix, kind, caplog):
    unfit = UNFIT[kind]()
    keys = QueueKeys(key_prefix, "boefje")
    record = msgspec.structs.replace(unfit, data=None)
    await api.services.redis.xadd(keys.events, {"op": "push", "rec": encode_record(record), "data": unfit.data, "sched": "new"})
    lag = await seconds_to_history(api)
    assert lag < LAG_TARGET * 4
    [letter] = await quarantined(api)
    assert letter["scheduler_id"] == "boefje" and letter["op"] == "push"
    if kind != "id not a UUID":
        assert (await api.get(f"/tasks/{unfit.id}")).status_code == 404  # not a row every read of it fails on
    assert any(r.levelname == "ERROR" and "quarantined event" in r.message for r in caplog.records)
    assert (await api.get("/history/quarantine")).json() == [letter]  # one letter: no crash loop
    assert await seconds_to_history(api) < LAG_TARGET * 4
