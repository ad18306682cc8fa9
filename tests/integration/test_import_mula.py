"""``redisched import-mula``: an install moves from mula v1.20 without losing its schedules,
its history or the tasks in flight, and the API answers as mula did for the same data.

The mula database is built from ``mula_v1_20_schema.sql`` (mula's alembic migrations written
out) and filled as a running mula fills it: status as the enum's names, ``data`` through
``json.dumps(default=str)`` (datetimes as ``2025-01-01 10:00:00+00:00``, naive ones without
an offset). What mula would answer is read from that database with mula's own queries.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
import redis

from redisched import cli
from redisched.models import mmh3_hex
from tests.acceptance.harness import api_client, db_dsn, settings, template_db  # noqa: F401
from tests.support.api import ROOT
from tests.support.databases import throwaway_database

SCHEMA = Path(__file__).with_name("mula_v1_20_schema.sql")
NOW = datetime.now(timezone.utc).replace(microsecond=0)
STR_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")


# --- a mula database, as mula v1.20 writes it --------------------------------------------------


@pytest.fixture
def mula_dsn(pg_dsn: str) -> Iterator[str]:
    with throwaway_database(pg_dsn, "mula") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA.read_text())
        yield dsn


def mula_json(data: dict) -> str:
    """mula's engine serialises JSON with json.dumps(default=str)."""
    return json.dumps(data, default=str)


def boefje_data(ooi: str, org: str = "org1", boefje_id: str = "dns-records") -> dict:
    return {
        "id": uuid.uuid4(),
        "boefje": {"id": boefje_id, "name": "DNS records", "version": None, "oci_image": "ghcr.io/minvws/dns:1"},
        "input_ooi": ooi,
        "organization": org,
        "deduplication_key": None,
        "dispatches": [],
    }


def boefje_hash(data: dict) -> str:
    return mmh3_hex(f"{data['input_ooi']}-{data['boefje']['id']}-{data['organization']}")


def normalizer_data(org: str = "org1") -> dict:
    return {
        "id": uuid.uuid4(),
        "normalizer": {"id": "kat_dns_normalize", "name": None, "version": None},
        "raw_data": {
            "id": uuid.uuid4(),
            "boefje_meta": {
                "id": uuid.uuid4(),
                "boefje": {"id": "dns-records", "name": None, "version": None, "oci_image": None},
                "input_ooi": "Hostname|internet|n.example",
                "arguments": {},
                "organization": org,
                "started_at": datetime(2026, 11, 30, 8, 15, 1, 250000),  # naive, as Bytes sent it
                "ended_at": NOW - timedelta(hours=5, seconds=0.5),
            },
            "mime_types": [{"value": "boefje/dns-records"}],
            "secure_hash": None,
            "hash_retrieval_link": None,
        },
    }


class MulaWorld:
    """Rows put in the mula database, by role."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.ids: dict[str, str] = {}

    def schedule(self, name: str, scheduler_id: str, data: dict, schedule_hash: str, *, enabled=True, cron=None,
                 deadline_at=None, age_hours: float = 30) -> str:  # fmt: skip
        schedule_id = uuid.uuid4()
        created = NOW - timedelta(hours=age_hours)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schedules (id, scheduler_id, hash, data, enabled, schedule, deadline_at, created_at,"
                " modified_at, organisation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [schedule_id, scheduler_id, schedule_hash, mula_json(data), enabled, cron, deadline_at, created,
                 created + timedelta(minutes=5), data.get("organization", data.get("organisation_id"))],
            )  # fmt: skip
        self.ids[name] = str(schedule_id)
        return str(schedule_id)

    def task(self, name: str, scheduler_id: str, data: dict, status: str, *, priority: int | None, hours_ago: float,
             ran_for: timedelta = timedelta(minutes=3), schedule: str | None = None, task_hash: str | None = None) -> str:  # fmt: skip
        task_id = data.get("id") or uuid.uuid4()
        created = NOW - timedelta(hours=hours_ago)
        modified = created if status == "QUEUED" else created + ran_for
        organisation = data.get("organization") or data.get("organisation_id") or data["raw_data"]["boefje_meta"]["organization"]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO tasks (id, scheduler_id, status, created_at, modified_at, type, schedule_id, hash,"
                " priority, data, organisation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [task_id, scheduler_id, status, created, modified, scheduler_id, self.ids.get(schedule),
                 task_hash, priority, mula_json(data), organisation],
            )  # fmt: skip
        self.ids[name] = str(task_id)
        return str(task_id)


@pytest.fixture
def mula(mula_dsn: str) -> MulaWorld:
    """A mula that ran for a day: schedules, finished tasks of each status, and tasks queued,
    dispatched and running when it was stopped."""
    world = MulaWorld(mula_dsn)
    dns = boefje_data("Hostname|internet|a.example")
    world.schedule("s_dns", "boefje", dns, boefje_hash(dns), deadline_at=NOW + timedelta(hours=20))
    off = boefje_data("Hostname|internet|off.example", org="org2")
    world.schedule("s_off", "boefje", off, boefje_hash(off), enabled=False, deadline_at=NOW + timedelta(hours=3), age_hours=29)
    report = {"organisation_id": "org1", "report_recipe_id": "recipe-1"}
    world.schedule("s_report", "report", report, mmh3_hex("recipe-1-org1"), cron="0 0 * * *",
                   deadline_at=(NOW + timedelta(days=1)).replace(hour=0, minute=0, second=0), age_hours=50)  # fmt: skip

    for status, hours_ago in (("COMPLETED", 20), ("FAILED", 12), ("CANCELLED", 6.5), ("COMPLETED", 1.2)):
        world.task(f"dns_{status}_{hours_ago}", "boefje", {**dns, "id": uuid.uuid4()}, status, priority=3,
                   hours_ago=hours_ago, schedule="s_dns", task_hash=boefje_hash(dns))  # fmt: skip
    world.task("old", "boefje", boefje_data("Hostname|internet|old.example"), "COMPLETED", priority=3, hours_ago=40,
               task_hash=boefje_hash(boefje_data("Hostname|internet|old.example")))  # fmt: skip
    world.task("normalized", "normalizer", normalizer_data(), "COMPLETED", priority=1, hours_ago=5, task_hash="ab" * 16)
    world.task("report_done", "report", {**report}, "COMPLETED", priority=7, hours_ago=23.5, schedule="s_report",
               task_hash=mmh3_hex("recipe-1-org1"))  # fmt: skip

    for name, priority, hours_ago in (("q_late_low", 2, 3), ("q_first", 1, 2), ("q_second", 1, 1)):
        data = boefje_data(f"Hostname|internet|{name}.example")
        world.task(name, "boefje", data, "QUEUED", priority=priority, hours_ago=hours_ago, task_hash=boefje_hash(data))
    world.task("q_normalizer", "normalizer", normalizer_data("org2"), "QUEUED", priority=None, hours_ago=0.5, task_hash="cd" * 16)
    dispatched = boefje_data("Hostname|internet|d.example")
    world.task("dispatched", "boefje", dispatched, "DISPATCHED", priority=4, hours_ago=0.3, ran_for=timedelta(seconds=2),
               task_hash=boefje_hash(dispatched))  # fmt: skip
    running = boefje_data("Hostname|internet|r.example", boefje_id="nmap")
    world.task("running", "boefje", running, "RUNNING", priority=4, hours_ago=0.2, ran_for=timedelta(seconds=9),
               task_hash=boefje_hash(running))  # fmt: skip
    return world


# --- what mula answers for that database (its stores' queries) --------------------------------


def mula_rows(dsn: str, query: str, params: list | None = None) -> list[tuple]:
    with psycopg.connect(dsn, options="-c timezone=utc") as conn:
        return conn.execute(query, params or []).fetchall()


def mula_tasks(dsn: str) -> list[dict]:
    """GET /tasks as mula answers it: newest first."""
    rows = mula_rows(dsn, "SELECT id, scheduler_id, schedule_id, organisation, priority, status::text, type, hash,"
                          " data, created_at, modified_at FROM tasks ORDER BY created_at DESC")  # fmt: skip
    keys = ("id", "scheduler_id", "schedule_id", "organisation", "priority", "status", "type", "hash", "data",
            "created_at", "modified_at")  # fmt: skip
    tasks = [dict(zip(keys, row)) for row in rows]
    for task in tasks:
        task["status"] = task["status"].lower()  # use_enum_values: the API answers the values
    return tasks


def mula_stats(dsn: str) -> dict:
    """GET /tasks/stats as mula's get_status_count_per_hour builds it."""
    rows = mula_rows(dsn, "SELECT date_trunc('hour', modified_at) AS hour, status::text, count(id) FROM tasks"
                          " WHERE modified_at >= %s GROUP BY 1, 2 ORDER BY 1 DESC, 2", [NOW - timedelta(hours=24)])  # fmt: skip
    statuses = ("pending", "queued", "dispatched", "running", "completed", "failed", "cancelled")
    stats: dict[str, dict] = {}
    for hour, status, n in rows:
        counts = stats.setdefault(hour.isoformat(), {s: 0 for s in statuses})
        counts[status.lower()] = n
        counts["total"] = counts.get("total", 0) + n
    return stats


def mula_pop_order(dsn: str, scheduler_id: str) -> list[str]:
    rows = mula_rows(dsn, "SELECT id FROM tasks WHERE scheduler_id = %s AND status = 'QUEUED'"
                          " ORDER BY priority ASC, created_at ASC", [scheduler_id])  # fmt: skip
    return [str(id_) for (id_,) in rows]


def instant(value) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def assert_same_data(ours, theirs) -> None:
    """``data`` as mula has it: equal, but each datetime in ISO 8601 with an offset (mula's
    ``str(datetime)``, naive or not, meant the same instant, a naive one in UTC)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), (ours, theirs)
        for key in theirs:
            assert_same_data(ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for mine, other in zip(ours, theirs):
            assert_same_data(mine, other)
    elif isinstance(theirs, str) and STR_DATETIME.fullmatch(theirs):
        assert ours[10] == "T" and STR_DATETIME.fullmatch(ours).group(2), f"not ISO with an offset: {ours}"
        assert instant(ours) == instant(theirs)
    else:
        assert ours == theirs


def assert_task_as_mula(ours: dict, theirs: dict) -> None:
    for key in ("scheduler_id", "organisation", "status", "type", "hash"):
        assert ours[key] == theirs[key], (key, ours, theirs)
    assert ours["id"] == str(theirs["id"])
    assert ours["schedule_id"] == (str(theirs["schedule_id"]) if theirs["schedule_id"] else None)
    assert ours["priority"] == (theirs["priority"] or 0)
    assert instant(ours["created_at"]) == theirs["created_at"]
    assert instant(ours["modified_at"]) == theirs["modified_at"]
    assert_same_data(ours["data"], theirs["data"])


# --- the import, through the CLI ---------------------------------------------------------------


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


async def import_mula(settings, mula_url: str) -> Ran:
    """``redisched import-mula`` in a subprocess, awaited: the API this test runs in the same
    event loop keeps serving (and committing) meanwhile, as a real one would."""
    env = {**os.environ, "REDISCHED_REDIS_URL": settings.redis_url, "SCHEDULER_DB_URI": settings.db_uri,
           "REDISCHED_KEY_PREFIX": settings.key_prefix, "REDISCHED_REDIS_CLUSTER": str(int(settings.redis_cluster)),
           "REDISCHED_PARTITIONS": str(settings.partitions)}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redisched", "import-mula", mula_url, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return Ran(process.returncode, stdout.decode(), stderr.decode())


def redisched_state(settings) -> tuple:
    """Everything the import writes: the history tables and the queues' Redis keys."""
    with psycopg.connect(settings.db_uri) as conn:
        tables = [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in ("schedules", "tasks", "task_counts")]
    client = redis.Redis.from_url(settings.redis_url)
    read = {b"hash": client.hgetall, b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
            b"stream": client.xrange, b"string": client.get, b"set": client.smembers}  # fmt: skip
    keys = {key: read[client.type(key)](key) for key in client.scan_iter(match=f"{settings.key_prefix}:*")}
    client.close()
    return tables, keys


async def test_an_imported_install_answers_as_mula_did(mula, settings):
    first = await import_mula(settings, mula.dsn)
    assert first.returncode == 0, first.stderr
    assert "schedules: 3 new, 0 already there" in first.stdout
    assert "tasks: 13 new (1 cancelled, 5 completed, 1 dispatched, 1 failed, 4 queued, 1 running), 0 already there" in first.stdout
    assert "live tasks into Redis: 4 queued, 2 dispatched/running leased, 0 already live" in first.stdout
    state = redisched_state(settings)

    again = await import_mula(settings, mula.dsn)
    assert again.returncode == 0, again.stderr
    assert "schedules: 0 new, 3 already there" in again.stdout
    assert "tasks: 0 new (none), 13 already there" in again.stdout
    assert "live tasks into Redis: 0 queued, 0 dispatched/running leased, 6 already live" in again.stdout
    assert redisched_state(settings) == state  # changed nothing

    expected = mula_tasks(mula.dsn)
    async with api_client(settings) as api:
        listed = (await api.get("/tasks", params={"limit": 100})).json()
        assert listed["count"] == len(expected) == 13
        assert [t["id"] for t in listed["results"]] == [str(t["id"]) for t in expected]
        for ours, theirs in zip(listed["results"], expected):
            assert_task_as_mula(ours, theirs)
        for theirs in expected:  # one by one: the live ones come from Redis
            assert_task_as_mula((await api.get(f"/tasks/{theirs['id']}")).json(), theirs)

        for status in ("queued", "dispatched", "running", "completed", "failed", "cancelled"):
            counted = (await api.get("/tasks", params={"status": status, "limit": 0})).json()["count"]
            assert counted == sum(t["status"] == status for t in expected), status
        counted = (await api.get("/tasks", params={"scheduler_id": "boefje", "organisation": "org1", "limit": 0})).json()
        assert counted["count"] == sum(t["scheduler_id"] == "boefje" and t["organisation"] == "org1" for t in expected)
        stats = (await api.get("/tasks/stats")).json()
        assert stats == mula_stats(mula.dsn) and list(stats) == list(mula_stats(mula.dsn))

        schedules = (await api.get("/schedules", params={"limit": 100})).json()
        theirs = mula_rows(mula.dsn, "SELECT id, scheduler_id, organisation, hash, data, enabled, schedule, deadline_at,"
                                     " created_at, modified_at FROM schedules ORDER BY created_at DESC")  # fmt: skip
        assert schedules["count"] == 3
        for ours, row in zip(schedules["results"], theirs, strict=True):
            id_, scheduler_id, organisation, hash_, data, enabled, cron, deadline, created, modified = row
            assert (ours["id"], ours["scheduler_id"], ours["organisation"], ours["hash"]) == (str(id_), scheduler_id, organisation, hash_)
            assert (ours["enabled"], ours["schedule"]) == (enabled, cron)
            assert_same_data(ours["data"], data)
            assert [instant(ours[k]) for k in ("deadline_at", "created_at", "modified_at")] == [deadline, created, modified]
        linked = {"filters": [{"column": "schedule_id", "operator": "eq", "value": mula.ids["s_dns"]}]}
        assert (await api.post("/tasks", json=linked)).json()["count"] == 4

        assert (await api.get("/schedulers/boefje")).json()["qsize"] == 3
        assert (await api.get("/schedulers/normalizer")).json()["qsize"] == 1
        popped = [(await api.post("/schedulers/boefje/pop")).json()["results"] for _ in range(4)]
        assert [p[0]["id"] for p in popped[:3]] == mula_pop_order(mula.dsn, "boefje") == [mula.ids[n] for n in ("q_first", "q_second", "q_late_low")]
        assert popped[3] == []
        [normalizer] = (await api.post("/schedulers/normalizer/pop")).json()["results"]
        assert normalizer["id"] == mula.ids["q_normalizer"]

        # The runners that held mula's dispatched and running tasks finish them, without a token.
        for name in ("dispatched", "running"):
            done = await api.patch(f"/tasks/{mula.ids[name]}", json={"status": "completed"})
            assert done.status_code == 200, done.text
            assert (await api.get(f"/tasks/{mula.ids[name]}")).json()["status"] == "completed"

        # Imported once more after all that: nothing comes back, nothing is undone.
        third = await import_mula(settings, mula.dsn)
        assert third.returncode == 0, third.stderr
        assert "tasks: 0 new (none), 13 already there" in third.stdout
        assert "live tasks into Redis: 0 queued, 0 dispatched/running leased" in third.stdout
        assert (await api.get("/schedulers/boefje")).json()["qsize"] == 0
        for name in ("dispatched", "running"):
            assert (await api.get(f"/tasks/{mula.ids[name]}")).json()["status"] == "completed"
        assert (await api.get(f"/tasks/{mula.ids['q_first']}")).json()["status"] == "dispatched"

        # A push of an imported schedule's task links to it, as it did in mula.
        push = {"organisation": "org1", "priority": 5, "data": {"boefje": {"id": "dns-records"},
                "input_ooi": "Hostname|internet|a.example", "organization": "org1"}}  # fmt: skip
        assert (await api.post("/schedulers/boefje/push", json=push)).json()["schedule_id"] == mula.ids["s_dns"]


async def test_an_import_into_a_partitioned_cluster_spreads_the_live_tasks_by_hash(mula, settings, cluster_url):
    """Each queue in three partitions over a 3-master cluster: every live task lands in the
    partition of its hash, where pops, PATCHes and the schedule links find it."""
    settings = settings.model_copy(update={"redis_url": cluster_url, "redis_cluster": True, "partitions": 3})
    done = await import_mula(settings, mula.dsn)
    assert done.returncode == 0, done.stderr
    assert "live tasks into Redis: 4 queued, 2 dispatched/running leased, 0 already live" in done.stdout
    async with api_client(settings) as api:
        queues = api.services.queues
        partitions = set()
        for name in ("q_first", "q_second", "q_late_low", "dispatched", "running"):
            task = (await api.get(f"/tasks/{mula.ids[name]}")).json()
            where = await queues.locate(task["id"])
            assert where == queues.layout.for_hash("boefje", task["hash"]), name
            partitions.add(where.partition)
        assert len(partitions) > 1  # five hashes: spread, not all in one partition
        assert (await api.get("/schedulers/boefje")).json()["qsize"] == 3
        popped = [(await api.post("/schedulers/boefje/pop")).json()["results"] for _ in range(4)]
        assert sorted(p[0]["id"] for p in popped[:3]) == sorted(mula.ids[n] for n in ("q_first", "q_second", "q_late_low"))
        assert popped[3] == []
        for name in ("dispatched", "running"):
            assert (await api.patch(f"/tasks/{mula.ids[name]}", json={"status": "completed"})).status_code == 200
        push = {"organisation": "org1", "priority": 5, "data": {"boefje": {"id": "dns-records"},
                "input_ooi": "Hostname|internet|a.example", "organization": "org1"}}  # fmt: skip
        assert (await api.post("/schedulers/boefje/push", json=push)).json()["schedule_id"] == mula.ids["s_dns"]
        again = await import_mula(settings, mula.dsn)
        assert "tasks: 0 new (none), 13 already there" in again.stdout
        assert "live tasks into Redis: 0 queued, 0 dispatched/running leased" in again.stdout


async def test_rows_older_mulas_left_are_kept_as_mula_answers_them(mula_dsn, settings):
    """A task of a per-organisation scheduler (before v1.20: ``boefje-org1``) stays queued in
    the history, where mula v1.20 leaves it too (no queue of its own pops it); a schedule
    without a hash gets the one its data gives."""
    world = MulaWorld(mula_dsn)
    world.task("legacy", "boefje-org1", boefje_data("Hostname|internet|legacy.example"), "QUEUED", priority=2, hours_ago=30)
    data = boefje_data("Hostname|internet|nohash.example")
    world.schedule("nohash", "boefje", data, None, deadline_at=NOW)
    done = await import_mula(settings, mula_dsn)
    assert done.returncode == 0, done.stderr
    assert "1 live tasks of schedulers redisched does not run stay in the history only" in done.stdout
    async with api_client(settings) as api:
        legacy = (await api.get(f"/tasks/{world.ids['legacy']}")).json()
        assert (legacy["scheduler_id"], legacy["status"]) == ("boefje-org1", "queued")
        assert (await api.get(f"/schedules/{world.ids['nohash']}")).json()["hash"] == boefje_hash(data)


def test_a_schema_it_does_not_know_is_refused_before_anything_is_written(mula, settings, monkeypatch, capsys):
    """Through the CLI's entry point in this process (a subprocess per case costs seconds)."""
    for name, value in (("REDISCHED_REDIS_URL", settings.redis_url), ("SCHEDULER_DB_URI", settings.db_uri),
                        ("REDISCHED_KEY_PREFIX", settings.key_prefix)):  # fmt: skip
        monkeypatch.setenv(name, value)
    refusals = [
        ("UPDATE alembic_version SET version_num = '0011'", "alembic revision 0011; this import knows mula v1.20's (0010)"),
        ("UPDATE alembic_version SET version_num = '0009'", "alembic revision 0009"),
        ("DROP TABLE alembic_version", "not a mula database"),
    ]
    for setup, message in refusals:
        with psycopg.connect(mula.dsn, autocommit=True) as conn:
            conn.execute(setup)
        assert cli.main(["import-mula", mula.dsn]) == 2, setup
        stderr = capsys.readouterr().err
        assert message in stderr and "nothing imported" in stderr, stderr
    assert cli.main(["import-mula", "postgresql+psycopg2://mula:secret@127.0.0.1:1/scheduler"]) == 2
    assert "cannot connect to the mula database" in capsys.readouterr().err
    monkeypatch.setenv("SCHEDULER_DB_URI", mula.dsn)  # redisched pointed at mula's own database
    assert cli.main(["import-mula", mula.dsn]) == 2
    assert "redisched's database (SCHEDULER_DB_URI) holds mula's tables" in capsys.readouterr().err
    with psycopg.connect(mula.dsn) as conn:  # left as it was: no redisched migration ran there
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
    with psycopg.connect(settings.db_uri) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


async def test_a_refusal_is_one_line_and_a_non_zero_exit(mula_dsn, settings):
    with psycopg.connect(mula_dsn, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0011'")
    refused = await import_mula(settings, mula_dsn)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("import-mula: refused, nothing imported: mula schema at")
    assert "Traceback" not in refused.stderr
