"""End to end with the direct client: N tasks pushed (pipelined), then C concurrent asyncio
workers each loop pop(limit=1) → PATCH running → PATCH completed until the queue is empty.
The same workload with BullMQ (benchmarks/peers/bullmq/bench.mjs: addBulk, then a Worker
with concurrency C and a no-op processor) on the same private Redis. Alternating runs,
medians of the repeats; the ratio is redisched / BullMQ on the processing phase at its
steady rate: from each side's first task completed to its last, so neither side's start (the
worker's connections, Node's warm-up, the first pops) is counted; with N = 5,000 (--quick)
BullMQ's start alone took a fifth of its processing time. The end-to-end ratios (push phase
included) count everything.

redisched runs three loops, each with no filter (BullMQ has none) and with the runners'
filter: the runner's loop as OpenKAT's runners do it (pop, PATCH running, PATCH completed:
three script calls per task); finish and fetch (pop once, then PATCH running and
``pop_next``: the "completed" brings the next task in the same call, as BullMQ's worker
does with moveToFinished); and finish and fetch with the tasks popped running
(``status="running"``: a worker that starts each task at once, as BullMQ's does, skips the
PATCH running: one script call per task).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import RUNNER_FILTER, Context, poppable_numbers, boefje_data, median, progress
from benchmarks.servers import private_redis
from redisched.client import AsyncClient
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.scripts import library

PEER = Path(__file__).resolve().parent / "peers" / "bullmq"
REPEATS = 3
# The loops whose end to end (push phase included) is reported beside BullMQ's.
END_TO_END = ("finish and fetch, no filter", "finish and fetch popped running, no filter",
              "finish and fetch popped running, runner filter")


def run(ctx: Context) -> None:
    n = ctx.scale(20_000, 5_000)
    concurrency = 10
    ctx.note(f"N={n:,} tasks, C={concurrency} concurrent workers, one Python process (asyncio, uvloop) "
             "vs one Node process; both share the 2 cores with Redis")
    peer_missing = _peer_missing()
    if peer_missing:
        ctx.note(f"BullMQ peer skipped: {peer_missing}")
    # name -> (filters, finish and fetch, popped running)
    variants = {"pop + 2 patches, no filter": (None, False, False),
                "pop + 2 patches, runner filter": (RUNNER_FILTER, False, False),
                "finish and fetch, no filter": (None, True, False),
                "finish and fetch, runner filter": (RUNNER_FILTER, True, False),
                "finish and fetch popped running, no filter": (None, True, True),
                "finish and fetch popped running, runner filter": (RUNNER_FILTER, True, True)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    bull: dict[str, list[dict[str, Any]]] = {"fifo": [], "priority": []}
    with private_redis() as url:
        for rep in range(REPEATS):
            for name, (filters, fetch_next, running) in variants.items():
                r = _run_redisched(url, f"e2e{rep}{len(results[name])}{fetch_next:d}{filters is not None:d}{running:d}",
                                   n, concurrency, filters, fetch_next, running)
                results[name].append(r)
                progress(f"e2e: redisched ({name}) run {rep + 1}: {r['process_per_s']:,.0f} tasks/s processed, "
                         f"push {r['push_per_s']:,.0f}/s")
            if not peer_missing:
                for mode in bull:
                    r = _run_bullmq(url, n, concurrency, mode == "priority")
                    if r is not None:
                        bull[mode].append(r)
                        progress(f"e2e: BullMQ ({mode}) run {rep + 1}: {r['jobs_per_s']:,.0f} jobs/s processed, "
                                 f"add {r['n'] / r['add_s']:,.0f}/s")
            redis.Redis.from_url(url).flushdb()
    ctx.detail("redisched", results)
    ctx.detail("bullmq", bull)

    for name, runs in results.items():
        ctx.row(f"redisched {name}: pop+running+completed", median([r["process_per_s"] for r in runs]), "tasks/s")
        ctx.row(f"redisched {name}: steady", median([r["steady_per_s"] for r in runs]), "tasks/s")
    ctx.row("redisched push phase (pipelined, 1000/batch)",
            median([r["push_per_s"] for r in results["pop + 2 patches, no filter"]]), "tasks/s")
    for name in END_TO_END:
        ctx.row(f"redisched {name}: end to end incl. push", median([r["total_per_s"] for r in results[name]]), "tasks/s")
    if peer_missing:
        ctx.skip("BullMQ", peer_missing)
        return
    for mode, runs in bull.items():
        if not runs:
            ctx.skip(f"BullMQ {mode}", "no successful run")
            continue
        jobs = median([r["jobs_per_s"] for r in runs])
        ctx.row(f"BullMQ {mode} ({runs[0].get('bullmq')}): worker processing", jobs, "jobs/s")
        ctx.row(f"BullMQ {mode}: worker processing, steady", median([r["steady_jobs_per_s"] for r in runs]), "jobs/s")
        ctx.row(f"BullMQ {mode}: end to end incl. addBulk", median([r["total_jobs_per_s"] for r in runs]), "jobs/s")
        for name in variants:
            # Per repeat (the two sides ran back to back), then the median: a burst of load
            # from elsewhere on the machine hits both sides of a ratio alike.
            ratios = [a["steady_per_s"] / b["steady_jobs_per_s"] for a, b in zip(results[name], runs)]
            ctx.row(f"ratio redisched ({name}) / BullMQ {mode} (processing, steady)", median(ratios), "x", "> 1")
        for name in END_TO_END:
            ratios = [a["total_per_s"] / b["total_jobs_per_s"] for a, b in zip(results[name], runs)]
            ctx.row(f"ratio redisched ({name}) / BullMQ {mode} (end to end incl. push / addBulk)", median(ratios), "x")


def _peer_missing() -> str | None:
    if not shutil.which("node"):
        return "node is not installed"
    if not (PEER / "node_modules" / "bullmq").is_dir():
        if not shutil.which("npm"):
            return "npm is not installed (needed for `npm ci` in benchmarks/peers/bullmq)"
        progress("e2e: npm ci in benchmarks/peers/bullmq (the lock file's BullMQ)")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            return f"npm ci failed: {done.stderr.strip()[-300:]}"
    return None


def _run_bullmq(url: str, n: int, concurrency: int, priority: bool) -> dict[str, Any] | None:
    args = ["node", "bench.mjs", "--redis", url, "--n", str(n), "--concurrency", str(concurrency), "--timeout", "120"]
    if priority:
        args.append("--priority")
    done = subprocess.run(args, cwd=PEER, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        progress(f"e2e: BullMQ run failed: {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_redisched(
    url: str, prefix: str, n: int, concurrency: int, filters: dict | None, fetch_next: bool, running: bool
) -> dict[str, float]:
    import uvloop

    return uvloop.run(_redisched(url, prefix, n, concurrency, filters, fetch_next, running))


async def _redisched(
    url: str, prefix: str, n: int, concurrency: int, filters: dict | None, fetch_next: bool, running: bool
) -> dict[str, float]:
    client = AsyncClient.from_url(url, QueueLayout(prefix=prefix), cluster=False)
    commands: QueueCommands = client.commands
    rng = random.Random(1)
    await client.redis.execute_command(*library().load_command())
    # Every task poppable under the runners' filter too: only enabled plugins of supported images.
    payloads = [boefje_data(i, rng=rng) for i in poppable_numbers(n)]
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        tasks = [{"organisation": org, "data": data, "priority": priority}
                 for data, org, priority in payloads[start:start + 1000]]
        for outcome in await client.push_many("boefje", tasks):
            if isinstance(outcome, Exception):
                raise outcome
    t1 = time.perf_counter()
    deadline = time.monotonic() + 120
    done, first_done = 0, 0.0

    popped_as = "running" if running else "dispatched"

    async def worker() -> None:
        nonlocal done, first_done
        got = await client.pop("boefje", filters, limit=1, status=popped_as)
        while got and time.monotonic() < deadline:
            task = got[0]
            if not running:
                await client.patch(task.id, {"status": "running"}, token=task.lease)
            if fetch_next:
                _, got = await client.pop_next(task.id, {"status": "completed"}, task.lease, filters, status=popped_as)
            else:
                await client.patch(task.id, {"status": "completed"}, token=task.lease)
                got = await client.pop("boefje", filters, limit=1)
            done += 1
            first_done = first_done or time.perf_counter()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    t2 = time.perf_counter()
    await client.close()
    if done != n:
        raise RuntimeError(f"redisched e2e completed {done} of {n} tasks")
    return {"push_per_s": n / (t1 - t0), "process_per_s": n / (t2 - t1), "total_per_s": n / (t2 - t0),
            "steady_per_s": (n - 1) / (t2 - first_done)}
