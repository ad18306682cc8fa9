"""The fair pop across organisations (REDISCHED_FAIRNESS=organisation) over HTTP: 50
concurrent poppers against one API process.

Shares: organisation A has 100,000 queued tasks at a better priority than nine others with
100 each; of the first 1,000 pops (ordered by the rev each pop's script gives its task,
strictly increasing per queue), each organisation's share against its weight: Jain's index
with equal weights, each small organisation's first task's place, and the same with
`none` (where the first small task waits behind all of A's). Weights 5:3:2 on three
organisations (A, the deep one, weighs 2) against 50/30/20 %.

Cost: HTTP pops/s (wrk, 50 connections) and Redis µs per pop script (INFO commandstats)
with fairness at 10 and at 10,000 organisations with work, against `none` on the same
tasks, the three run in alternation so they see the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import redis

from benchmarks.bench_http import Loader, _database
from benchmarks.common import Context, median, progress
from benchmarks.servers import api_server, postgres_available, private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.records import decode_record
from redisched.queue.scripts import library

POPPERS = 50
FIRST = 1000
BIG_ORG = "A"
SMALL_ORGS = [f"s{i}" for i in range(1, 10)]


def _data(org: str, n: int) -> dict[str, Any]:
    return {"boefje": {"id": "dns-records", "name": "dns-records", "version": None, "oci_image": None},
            "input_ooi": f"Hostname|internet|{org}-{n}.example.com", "organization": org}  # fmt: skip


def _fill(raw: redis.Redis, fairness: str, tasks: list[tuple[str, int, int]]) -> None:
    """Pushes (organisation, n, priority) through the push script, pipelined."""
    commands = QueueCommands(QueueLayout(prefix="rs", fairness=fairness))
    keys = commands.keys("boefje")
    raw.execute_command(*library().load_command())
    for start in range(0, len(tasks), 2000):
        pipe = raw.pipeline(transaction=False)
        for org, n, priority in tasks[start : start + 2000]:
            call = commands.push("boefje", organisation=org, data=_data(org, n), priority=priority)
            args = list(call.args)
            args[8] = ""  # ARGV[9], no limit rules version: the API started since must not find it stale
            pipe.execute_command(*call.script.fcall(call.keys, args))
        pipe.delete(keys.events)  # no snapshotter here: keep memory flat
        replies = pipe.execute()
        refused = [reply for reply in replies[:-1] if isinstance(reply, (int, Exception))]
        if refused:
            raise RuntimeError(f"a push was refused during the fill: {refused[0]!r}")


@contextlib.contextmanager
def _api(url: str, dsn: str, fairness: str, weights: dict[str, float] | None = None) -> Iterator[int]:
    env = {"REDISCHED_FAIRNESS": fairness}
    if weights:
        env["REDISCHED_ORGANISATION_WEIGHTS"] = json.dumps(weights)
    with api_server(url, dsn, env=env) as port:
        yield port


async def _pop_first(port: int, count: int) -> list[str]:
    """``count`` pops of one task each by POPPERS concurrent clients; the popped ids."""
    claimed, ids = 0, []
    limits = httpx.Limits(max_connections=POPPERS, max_keepalive_connections=POPPERS)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as client:

        async def popper() -> None:
            nonlocal claimed
            while claimed < count:
                claimed += 1
                response = await client.post("/schedulers/boefje/pop?limit=1")
                response.raise_for_status()
                ids.extend(task["id"] for task in response.json()["results"])

        await asyncio.gather(*(popper() for _ in range(POPPERS)))
    return ids


def _in_pop_order(raw: redis.Redis, ids: list[str]) -> list[str]:
    """The popped tasks' organisations in the order their pops ran (each record's rev)."""
    stored = raw.hmget("rs:{boefje}:tasks", ids)
    records = [decode_record(record, task_id=task_id, queue_id="boefje") for task_id, record in zip(ids, stored)]
    return [record.organisation for record in sorted(records, key=lambda record: int(record.rev))]


def _jain(shares: dict[str, float], weights: dict[str, float]) -> float:
    x = [shares.get(org, 0.0) / weight for org, weight in weights.items()]
    return sum(x) ** 2 / (len(x) * sum(v * v for v in x))


def _shares(ctx: Context, url: str, dsn: str, big: int) -> None:
    raw = redis.Redis.from_url(url)
    backlog = [(BIG_ORG, n, 10) for n in range(big)] + [(org, n, 50) for org in SMALL_ORGS for n in range(100)]
    for fairness in ("none", "organisation"):
        raw.flushall()
        _fill(raw, fairness, backlog)
        with _api(url, dsn, fairness) as port:
            order = _in_pop_order(raw, asyncio.run(_pop_first(port, FIRST)))
        first_small = max(order.index(org) + 1 if org in order else None for org in SMALL_ORGS) if fairness != "none" else None
        counts = Counter(order)
        weights = {org: 1.0 for org in [BIG_ORG, *SMALL_ORGS]}
        shares = {org: counts[org] / len(order) for org in weights}
        label = "fair" if fairness != "none" else "none"
        ctx.detail(f"equal_{label}", {"popped": len(order), "counts": dict(counts)})
        progress(f"fairness: {label}: {dict(counts)}")
        ctx.row(f"{label}: Jain's index, first {FIRST} pops, equal weights", _jain(shares, weights), "",
                ">= 0.99" if fairness != "none" else "")
        if fairness == "none":
            # the first small task's place in queue order: every A task is ahead of it
            ahead = big
            ctx.row("none: first small organisation's task, place in pop order", ahead + 1, "pops",
                    note=f"behind all {big:,} of A's tasks (queue order); its first {FIRST} pops: {counts[BIG_ORG]} of A's")
        else:
            ctx.row("fair: latest first task of the 9 small organisations, place in pop order", first_small, "pops", "<= 10")

    raw.flushall()
    weights = {BIG_ORG: 2.0, "B": 5.0, "C": 3.0}
    _fill(raw, "organisation", [(BIG_ORG, n, 10) for n in range(big)] + [(org, n, 50) for org in ("B", "C") for n in range(1000)])
    with _api(url, dsn, "organisation", weights) as port:
        order = _in_pop_order(raw, asyncio.run(_pop_first(port, FIRST)))
    counts = Counter(order)
    ctx.detail("weighted", {"weights": weights, "counts": dict(counts)})
    progress(f"fairness: weights {weights}: {dict(counts)}")
    for org, weight in sorted(weights.items(), key=lambda item: -item[1]):
        target = 100 * weight / sum(weights.values())
        share = 100 * counts[org] / len(order)
        ctx.row(f"weights 5:3:2: {org} (weight {weight:g}) share - {target:.0f} %, first {FIRST} pops",
                abs(share - target), "points", "<= 2", note=f"share {share:.1f} %")
    raw.close()


def _cost(ctx: Context, dsn: str, depth: int, seconds: float, rounds: int) -> None:
    """none, fair with 10 orgs, fair with 10,000 orgs: each on its own Redis, topped up to the
    same depth before each run; cost per task popped (empty pops excluded)."""
    loader = Loader(seconds)
    configs = {"none": ("none", 10_000), "fair, 10 orgs": ("organisation", 10), "fair, 10,000 orgs": ("organisation", 10_000)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    queue_key = "rs:{boefje}:queue"
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, (fairness, orgs) in configs.items():
            url = stack.enter_context(private_redis())
            raw = redis.Redis.from_url(url)
            servers[name] = (raw, fairness, orgs, stack.enter_context(_api(url, dsn, fairness)), [0])
        for round_no in range(rounds):
            for name, (raw, fairness, orgs, port, serial) in servers.items():
                missing = depth - raw.zcard(queue_key)
                _fill(raw, fairness, [(f"o{n % orgs}", n, 10 + n % 90) for n in range(serial[0], serial[0] + missing)])
                serial[0] += missing
                raw.config_resetstat()
                pops = loader.run(f"http://127.0.0.1:{port}/schedulers/boefje/pop?limit=1", POPPERS)
                stats = raw.info("commandstats")["cmdstat_fcall"]
                pops["popped"] = depth - raw.zcard(queue_key)
                pops["tasks_per_s"] = pops["popped"] / pops["duration_s"]
                pops["redis_us_per_task"] = stats["usec"] / max(1, pops["popped"])
                pops["tasks_per_script"] = pops["popped"] / max(1, stats["calls"])
                results[name].append(pops)
                progress(f"fairness: cost round {round_no + 1}, {name}: {pops['tasks_per_s']:,.0f} tasks popped/s, "
                         f"{pops['redis_us_per_task']:.0f} µs of Redis per task, {pops['tasks_per_script']:.1f} tasks per script call")
                if pops["popped"] >= depth:
                    ctx.note(f"{name}: the queue ran dry during a run: make the depth larger")
        for raw, *_ in servers.values():
            raw.close()
    ctx.detail("cost", results)
    for name in configs:
        runs = results[name]
        ctx.row(f"HTTP tasks popped/s, {name}", median([r["tasks_per_s"] for r in runs]), "tasks/s")
        ctx.row(f"Redis µs per task popped, {name}", median([r["redis_us_per_task"] for r in runs]), "µs")
    for name in ("fair, 10 orgs", "fair, 10,000 orgs"):
        paired = [b["tasks_per_s"] / a["tasks_per_s"] for a, b in zip(results[name], results["none"])]
        ctx.row(f"HTTP pop cost, {name} / none (paired rounds)", median(paired), "x", "<= 1.3")
        redis_ratio = [a["redis_us_per_task"] / b["redis_us_per_task"] for a, b in zip(results[name], results["none"])]
        ctx.row(f"Redis time per task popped, {name} / none", median(redis_ratio), "x")


def run(ctx: Context) -> None:
    big = ctx.scale(100_000, 10_000)
    pg_missing = postgres_available()
    with _database(pg_missing) as dsn:
        if pg_missing:
            ctx.note(f"Postgres not reachable ({pg_missing}); the API runs with an unreachable DSN (push/pop do not use it)")
        with private_redis() as url:
            _shares(ctx, url, dsn, big)
        _cost(ctx, dsn, depth=ctx.scale(100_000, 40_000), seconds=ctx.scale(5, 3), rounds=ctx.scale(3, 2))
    ctx.note(f"shares: A holds {big:,} tasks at priority 10, the others at 50; pops of one task each, "
             f"{POPPERS} concurrent clients over HTTP, one API process")
