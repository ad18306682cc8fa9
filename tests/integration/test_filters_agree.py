"""One meaning everywhere: for every filter of a broad grid, the Python reference evaluator,
the Lua evaluator (real Redis) and the SQL compiler (real Postgres) select the same tasks."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg.types.json import Jsonb

from redisched.filters import FilterError, evaluate, parse_filter_request, to_lua, to_sql
from redisched.models import datetime_to_us
from redisched.queue import indexes
from redisched.queue.scripts import verbatim_index_paths

FILTER_LUA = (Path(__file__).parents[2] / "lua" / "includes" / "filter.lua").read_text()
# In the queue scripts a task's data lives in its own hash (common.lua's load_data); here the
# records come in ARGV as (record, data) pairs.
MATCH_ALL_SCRIPT = f"""
local NUL = '\\0'
local function per_call() end
{verbatim_index_paths()}
local DATA = {{}}
local function load_data(id)
  return DATA[id]
end
local function quarantine_record() end
""" + FILTER_LUA + """
like_reset(1e9)
local node = cjson.decode(ARGV[1])
local matched = {}
for i = 2, #ARGV, 2 do
  local rec = cjson.decode(ARGV[i])
  DATA[rec.id] = ARGV[i + 1]
  if filter_match(node, rec) then
    matched[#matched + 1] = rec.id
  end
end
return matched
"""

INJECTION = "'; DROP TABLE tasks; --"
VALUES = [
    "", "abc", "ABC", "Abc%", "a_c", "a\\c", "it's", INJECTION, "Élan", "日本語", "🎉 party", "10",
    'a"b', 0, -1, 1, 1.0, 1.5, -12.25, 2**53, True, False, None, [], ["a", "b"], [1, 2, 3],
    [[1, 2], [3]], [{"k": 1}], [None], ["abc"], [[]], [{}], {}, {"k": None}, {"k": 1},
    {"k": {"x": [1, 2]}}, {"a": "b", "c": []}, {"k": []}, {"k": {}}, "9", 10,
]  # fmt: skip
BOEFJES = [
    {"id": "dns-records", "oci_image": None},
    {"id": "nmap", "oci_image": "ghcr.io/minvws/nl-kat-nmap:1"},
    {"id": "Nmap", "oci_image": "ghcr.io/minvws/nl-kat-dns:2"},
    {"id": "nmap-udp"},
    {"id": "dns_sec", "oci_image": "ghcr.io/minvws/nl-kat-nmap:1", "name": "DNSSEC"},
]
ORGANISATIONS = ["org1", "org2", "Org1", "org_1", "org%1", "ørg"]
PRIORITIES = [-12, 0, 1, 5, 5, 1764245394, 2**53 - 1]
STATUSES = ["queued", "dispatched", "running", "completed", "failed", "cancelled", "pending"]
BASE = datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)


def make_task(i: int) -> dict:
    data = {
        "boefje": BOEFJES[i % len(BOEFJES)],
        "v": VALUES[i % len(VALUES)],
        "w": VALUES[(i * 7 + 3) % len(VALUES)],
        "nested": {"k": VALUES[(i * 5 + 1) % len(VALUES)]} if i % 10 != 7 else "scalar",
        "input_ooi": f"Hostname|internet|host{i}.example" if i % 4 else None,
        "dispatches": [],
    }
    if i % 9 == 8:
        del data["v"]
    if i % 6 == 0:
        data[INJECTION] = "dropped?"
        data["a'b"] = i
        data["100%"] = True
    return {
        "id": str(uuid.UUID(int=i * 7919 + 1)),
        "scheduler_id": ["boefje", "normalizer", "report"][i % 3],
        "schedule_id": str(uuid.UUID(int=i)) if i % 2 else None,
        "organisation": ORGANISATIONS[i % len(ORGANISATIONS)],
        "priority": PRIORITIES[i % len(PRIORITIES)],
        "status": STATUSES[i % len(STATUSES)],
        "type": ["boefje", "normalizer", "report"][i % 3],
        "hash": f"{i:032x}" if i % 5 else None,
        "data": data,
        "created_at": BASE + timedelta(hours=i, microseconds=i),
        "modified_at": BASE + timedelta(hours=i, seconds=i),
    }


TASKS = [make_task(i) for i in range(36)]
TASK_COLUMNS = ["id", "scheduler_id", "schedule_id", "organisation", "priority", "status", "type", "hash"]


def redis_record(task: dict) -> list[bytes]:
    """The task as the queue stores it: its record, then its data."""
    record = {
        **{k: v for k, v in task.items() if k != "data"},
        "priority": str(task["priority"]),
        "created_at": str(datetime_to_us(task["created_at"])),
        "modified_at": str(datetime_to_us(task["modified_at"])),
        "ix": indexes.values_of_task(task["organisation"], task["data"]),
    }
    return [msgspec.json.encode(record), msgspec.json.encode(task["data"])]


# --- the grid --------------------------------------------------------------------------------

EQ_VALUES = [v for v in VALUES if v != 2**53] + ["org1", 5, "dns-records", "queued", "nmap", f"{1:032x}"]
LISTS = [[], ["org1", "abc", 1], [None, 1.0], [[], {}], [["a", "b"], {"k": 1}], ["nmap", "dns-records"], [True, "", 0]]
ORDER_VALUES = ["", "a", "abc", "Z", "é", "10", 0, 1, 5, 1.5, -1, True, None, [1]]
LIKE_PATTERNS = [
    "%", "", "abc", "a%", "%c", "_bc", "A%", "%\\%%", "%\\_%", "a\\_c", "%'%", "É%", "日_語", "%a%c%",
    "%%", "a\\\\c", "org_1", "org\\%1", "%1", "nmap%", "ghcr.io/%:1", "_", "__", "%_%_%_%_%_%", "🎉%",
    "'; DROP%", "%--", "%b_%", "%_c", "a_%", "%本_", "%_本%", "_b%c", "%a_c", "%ng_r%", "%s://_%",
]  # fmt: skip
CONTAINS_VALUES = ["a", "", "b", "本", "'", 1, [1, 2], {"k": 1}, None, [], "org"]
PREFIXES = ["a", "", "Hostname|", "日", "nmap", "ghcr.io/", "org", "'"]
CONTAINERS = [
    {"k": 1}, {"boefje": {"id": "nmap"}}, [1], ["a"], {}, [], {"c": []}, '{"v": 5}', [[1]], [[]],
    {"k": []}, {"k": {}}, ["a", "b", "abc", 1, 2, 3, None], [{"k": 1, "z": 2}], {"a": "b"},
    '[{"k": 1}]', {"nested": {"k": {"x": [2]}}}, {"dispatches": []}, {"v": []}, {"v": {}},
]  # fmt: skip
DATA_FIELDS = [
    None, "v", "w", "nested__k", "nested", "boefje__id", "boefje__oci_image", "missing", "v__k",
    "nested__k__x", "boefje", INJECTION, "a'b", "100%", "input_ooi", "dispatches",
]  # fmt: skip
ALIASES = {"eq": ["==", "eq", "is"], "ne": ["!=", "ne", "is_not"], "gt": [">", "gt"], "lt": ["<", "lt"],
           "gte": [">=", "gte"], "lte": ["<=", "lte"]}  # fmt: skip


def leaf(column, field, operator, value):
    filt = {"column": column, "operator": operator, "value": value}
    return {**filt, "field": field} if field else filt


def leaves_for(column: str, field: str | None, step: int = 1, offset: int = 0) -> list[dict]:
    """Every operator with every ``step``-th value of its pool (from ``offset``)."""
    alias = itertools.count()

    def pick(pool):
        return pool[offset % step :: step]

    out = []
    for op in ("eq", "ne"):
        out += [leaf(column, field, ALIASES[op][next(alias) % 3], v) for v in pick(EQ_VALUES)]
    out += [leaf(column, field, op, v) for op in ("in", "not_in") for v in pick(LISTS)]
    out += [leaf(column, field, op, None) for op in ("is_null", "is_not_null")]
    out += [leaf(column, field, ALIASES[op][next(alias) % 2], v) for op in ("gt", "lt", "gte", "lte") for v in pick(ORDER_VALUES)]
    out += [leaf(column, field, op, p) for op in ("like", "not_like", "ilike", "not_ilike") for p in pick(LIKE_PATTERNS)]
    out += [leaf(column, field, "contains", v) for v in pick(CONTAINS_VALUES)]
    out += [leaf(column, field, "starts_with", p) for p in pick(PREFIXES)]
    if column == "data":
        out += [leaf(column, field, op, v) for op in ("@>", "<@") for v in pick(CONTAINERS)]
    return out


def instant_leaves() -> list[dict]:
    third = TASKS[3]["created_at"]
    moments = [
        third.isoformat(),
        third.isoformat().replace("+00:00", "Z"),
        third.astimezone(timezone(timedelta(hours=2))).isoformat(),
        third.replace(tzinfo=None).isoformat(),
        "2025-06-02",
        (third + timedelta(microseconds=1)).isoformat(),
        "2025-06-01T10:00:00Z",
    ]
    out = []
    for column in ("created_at", "modified_at"):
        for op, moment in itertools.product(("==", "!=", ">", "<", ">=", "<="), moments):
            out.append(leaf(column, None, op, moment))
        out += [leaf(column, None, "in", moments[:3]), leaf(column, None, "not_in", moments[3:])]
        out += [leaf(column, None, "in", []), leaf(column, None, "is_null", None), leaf(column, None, "eq", None)]
    return out


def grid() -> list[dict]:
    """Every pool in full on data.v and data.w; a third of each pool, rotating, elsewhere."""
    leaves = [lf for i, column in enumerate(TASK_COLUMNS) for lf in leaves_for(column, None, 3, i)]
    leaves += [lf for field in ("v", "w") for lf in leaves_for("data", field)]
    others = [f for f in DATA_FIELDS if f not in ("v", "w")]
    leaves += [lf for i, field in enumerate(others) for lf in leaves_for("data", field, 3, i)]
    return leaves + instant_leaves()


def combinations(leaves: list[dict], count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)

    def group(depth: int) -> dict:
        kinds = rng.sample(["and", "or", "not"], rng.randint(1, 3))
        return {k: [element(depth + 1) for _ in range(rng.randint(1, 3))] for k in kinds}

    def element(depth: int) -> dict:
        return group(depth) if depth < 3 and rng.random() < 0.35 else rng.choice(leaves)

    return [{"filters": group(0)} if i % 2 else {"filters": [element(1) for _ in range(2)]} for i in range(count)]


# --- the three evaluators --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            """CREATE TEMP TABLE tasks (
                 id uuid PRIMARY KEY, scheduler_id text NOT NULL, schedule_id uuid,
                 organisation text NOT NULL, priority bigint NOT NULL, status text NOT NULL,
                 type text NOT NULL, hash text, data jsonb NOT NULL,
                 created_at timestamptz NOT NULL, modified_at timestamptz NOT NULL)"""
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tasks VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [[*(t[c] for c in TASK_COLUMNS), Jsonb(t["data"]), t["created_at"], t["modified_at"]] for t in TASKS],
            )
        yield conn


@pytest.fixture(scope="module")
def lua_match_all(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    script = client.register_script(MATCH_ALL_SCRIPT)
    records = [part for t in TASKS for part in redis_record(t)]
    yield lambda node: {i.decode() for i in script(args=[to_lua(node), *records])}
    client.close()


def sql_ids(pg, node) -> set[str]:
    condition, params = to_sql(node)
    query = psycopg.sql.SQL("SELECT id::text FROM tasks WHERE {}").format(condition)
    return {row[0] for row in pg.execute(query, params).fetchall()}


def python_ids(node) -> set[str]:
    return {t["id"] for t in TASKS if evaluate(node, t)}


def disagreements(pg, lua_match_all, bodies: list[dict]) -> tuple[list[str], list[int]]:
    problems, sizes = [], []
    for body in bodies:
        node = parse_filter_request(body)
        py, lua, db = python_ids(node), lua_match_all(node), sql_ids(pg, node)
        sizes.append(len(py))
        if not py == lua == db:
            problems.append(f"{json.dumps(body, ensure_ascii=False)}: python={len(py)} lua={len(lua)} sql={len(db)}")
    return problems, sizes


def test_every_leaf_agrees(pg, lua_match_all):
    bodies = [{"filters": [lf]} for lf in grid()]
    problems, sizes = disagreements(pg, lua_match_all, bodies)
    assert problems == [], f"{len(problems)} of {len(bodies)} disagree:\n" + "\n".join(problems[:20])
    # the grid is not vacuous: many filters select some but not all tasks
    assert sum(0 < n < len(TASKS) for n in sizes) > len(bodies) // 5


def test_negations_agree(pg, lua_match_all):
    # Every filter is two-valued, so NOT is its exact complement: SQL NULLs must not leak.
    bodies = [{"filters": {"not": [lf]}} for lf in grid()[1::3]]
    problems, _ = disagreements(pg, lua_match_all, bodies)
    assert problems == [], f"{len(problems)} of {len(bodies)} disagree:\n" + "\n".join(problems[:20])


def test_nested_groups_agree(pg, lua_match_all):
    selective = [lf for lf in grid() if 0 < len(python_ids(parse_filter_request({"filters": [lf]}))) < len(TASKS)]
    bodies = combinations(selective, 400)
    problems, sizes = disagreements(pg, lua_match_all, bodies)
    assert problems == [], f"{len(problems)} of {len(bodies)} disagree:\n" + "\n".join(problems[:20])
    assert sum(0 < n < len(TASKS) for n in sizes) > 100


def test_the_runner_filter_agrees(pg, lua_match_all):
    body = {
        "filters": [
            {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": ["ghcr.io/minvws/nl-kat-nmap:1"]},
            {"column": "data", "field": "boefje__id", "operator": "in", "value": ["nmap", "dns_sec"]},
        ]
    }
    node = parse_filter_request(body)
    expected = {t["id"] for t in TASKS if t["data"]["boefje"].get("oci_image") == "ghcr.io/minvws/nl-kat-nmap:1"}
    assert python_ids(node) == lua_match_all(node) == sql_ids(pg, node) == expected != set()


@pytest.mark.parametrize("text", [INJECTION, "x' OR '1'='1", "a\\'b", '"); DROP TABLE tasks; --', "%' --", "$$", "\\"])
def test_injection_is_matched_literally(pg, lua_match_all, text):
    like_text = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    for body in (
        {"filters": [leaf("data", text, "eq", "dropped?")]},
        {"filters": [leaf("data", "v", "==", text)]},
        {"filters": [leaf("organisation", None, "in", [text, "org1"])]},
        {"filters": [leaf("data", "v", "like", like_text)]},
        {"filters": [leaf("data", None, "@>", {text: "dropped?"})]},
        {"filters": {"or": [leaf("data", "w", "contains", text), leaf("data", "v", "starts_with", text)]}},
    ):
        node = parse_filter_request(body)
        assert python_ids(node) == lua_match_all(node) == sql_ids(pg, node)
    literal = parse_filter_request({"filters": [leaf("data", INJECTION, "eq", "dropped?")]})
    assert len(sql_ids(pg, literal)) == 6
    assert pg.execute("SELECT count(*) FROM tasks").fetchone()[0] == len(TASKS)


@pytest.mark.parametrize(
    "body",
    [
        {"filters": [leaf("data", "v", "eq", "a\x00'; DROP TABLE tasks; --")]},
        {"filters": [leaf("data", "v\x00", "eq", "x")]},
        {"filters": [leaf("data", "v", "like", "%\\")]},
        {"filters": [leaf("data; DROP TABLE tasks", None, "eq", "x")]},
    ],
)
def test_what_cannot_be_matched_literally_is_refused(pg, body):
    with pytest.raises(FilterError):
        parse_filter_request(body)
    assert pg.execute("SELECT count(*) FROM tasks").fetchone()[0] == len(TASKS)


# --- schedules (Postgres and Python; schedules do not live in Redis) -------------------------

SCHEDULES = [
    {
        "id": str(uuid.UUID(int=1000 + i)),
        "scheduler_id": ["boefje", "report"][i % 2],
        "organisation": ORGANISATIONS[i % len(ORGANISATIONS)],
        "hash": f"{i:032x}",
        "data": {"boefje": BOEFJES[i % len(BOEFJES)], "v": VALUES[i % len(VALUES)]},
        "enabled": i % 3 != 0,
        "schedule": "0 * * * *" if i % 4 == 0 else None,
        "deadline_at": BASE + timedelta(days=i) if i % 5 else None,
        "created_at": BASE - timedelta(days=i),
        "modified_at": BASE,
    }
    for i in range(12)
]


def test_schedule_filters_agree(pg_dsn):
    bodies = [
        {"filters": [leaf(column, None, op, value)]}
        for column, values in (
            ("enabled", [True, False, None, 1, "true"]),
            ("schedule", ["0 * * * *", None, "0%", 0]),
            ("deadline_at", ["2025-06-03", None]),
            ("scheduler_id", ["report", "boefje"]),
        )
        for op in ("eq", "ne", "gt", "lte", "like", "is_null")
        for value in values
        if op != "like" or (column != "deadline_at" and isinstance(value, str))
    ]
    bodies += [{"filters": [lf]} for lf in leaves_for("data", "v")[::3]]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            """CREATE TEMP TABLE schedules (
                 id uuid, scheduler_id text, organisation text, hash text, data jsonb, enabled bool,
                 schedule text, deadline_at timestamptz, created_at timestamptz, modified_at timestamptz)"""
        )
        columns = list(SCHEDULES[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO schedules VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [[Jsonb(s[c]) if c == "data" else s[c] for c in columns] for s in SCHEDULES],
            )
        problems = []
        for body in bodies:
            node = parse_filter_request(body, "schedules")
            condition, params = to_sql(node, "schedules")
            query = psycopg.sql.SQL("SELECT id::text FROM schedules WHERE {}").format(condition)
            db = {row[0] for row in conn.execute(query, params).fetchall()}
            py = {s["id"] for s in SCHEDULES if evaluate(node, s)}
            if db != py:
                problems.append(f"{json.dumps(body)}: python={len(py)} sql={len(db)}")
    assert problems == [], "\n".join(problems[:20])


def test_filters_on_a_tasks_schedule_agree(pg_dsn):
    """Column ``schedule`` of tasks (mula's join): Postgres' correlated subqueries and Python
    agree, tasks whose schedule is absent (none, or deleted) matching nothing, even negated."""
    schedules = {str(uuid.UUID(int=i)): {**SCHEDULES[i % len(SCHEDULES)], "id": str(uuid.UUID(int=i))}
                 for i in range(len(TASKS)) if i % 4 == 1}  # fmt: skip  (tasks with i % 4 == 3 name a missing one)
    joined = [{**t, "schedule": schedules.get(t["schedule_id"])} for t in TASKS]
    leaves = [
        leaf("schedule", field, op, value)
        for field, values in (("enabled", [True, False, None]), ("deadline_at", ["2025-06-03", None]),
                              ("data__v", VALUES[:4]), (None, ["0 * * * *", None]), ("organisation", ORGANISATIONS[:2]))
        for op in ("eq", "ne", "gt", "lte")
        for value in values
    ]  # fmt: skip
    bodies = [{"filters": [lf]} for lf in leaves] + [{"filters": {"not": [lf]}} for lf in leaves[::2]]
    bodies += [{"filters": {"or": [lf, leaf("priority", None, "gt", 0)]}} for lf in leaves[::3]]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE tasks (id uuid, schedule_id uuid, priority bigint)")
        conn.execute(
            """CREATE TEMP TABLE schedules (
                 id uuid, scheduler_id text, organisation text, hash text, data jsonb, enabled bool,
                 schedule text, deadline_at timestamptz, created_at timestamptz, modified_at timestamptz)"""
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO tasks VALUES (%s, %s, %s)", [[t["id"], t["schedule_id"], t["priority"]] for t in TASKS])
            columns = list(SCHEDULES[0])
            cur.executemany(
                "INSERT INTO schedules VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [[Jsonb(s[c]) if c == "data" else s[c] for c in columns] for s in schedules.values()],
            )
        problems = []
        for body in bodies:
            node = parse_filter_request(body, "tasks")
            condition, params = to_sql(node, "tasks")
            query = psycopg.sql.SQL("SELECT id::text FROM tasks WHERE {}").format(condition)
            db = {row[0] for row in conn.execute(query, params).fetchall()}
            py = {t["id"] for t in joined if evaluate(node, t)}
            if db != py:
                problems.append(f"{json.dumps(body)}: python={len(py)} sql={len(db)}")
    assert problems == [], "\n".join(problems[:20])
    assert any(evaluate(parse_filter_request(b, "tasks"), t) for b in bodies for t in joined)  # not vacuous
