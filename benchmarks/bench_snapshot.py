"""Snapshot lag: a steady 2,000 pushes/s (boefje tasks, each linking a new schedule) for
~10 s (5 s with --quick) while the snapshotter follows the events stream into a private
Postgres database (created, migrated, dropped). Lag per event = its batch applied (committed,
acked) − the event id's time, measured inside the snapshotter's process
(benchmarks/snapshot_worker.py). The pusher paces itself in 5 ms ticks of 10 pipelined pushes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from benchmarks.common import Context, boefje_data, percentile, progress
from benchmarks.servers import ROOT, postgres_available, private_database, private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.scripts import library

try:
    from redisched.history.snapshotter import stream_id
except ImportError:  # run() says so
    stream_id = None  # type: ignore[assignment]

RATE = 2000
TICK = 0.005


def run(ctx: Context) -> None:
    try:
        from redisched.history.snapshotter import stream_id  # noqa: F401
    except ImportError:
        ctx.skip("snapshot lag", "redisched/history/snapshotter.py is not there yet")
        return
    missing = postgres_available()
    if missing:
        ctx.skip("snapshot lag", f"Postgres not reachable at 127.0.0.1:5432: {missing}")
        return
    seconds = ctx.scale(10, 5)
    with private_redis() as url, private_database() as dsn:
        from redisched.history.migrate import migrate

        asyncio.run(migrate(dsn))
        out = Path(tempfile.mkstemp(prefix="redisched-bench-lag-", suffix=".json")[1])
        worker = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.snapshot_worker", "--redis", url, "--dsn", dsn, "--prefix", "rs",
             "--out", str(out), "--seconds", str(seconds + 60)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("the snapshot worker did not start")
            pushed, elapsed = _push_steadily(url, seconds)
            ctx.row("push rate achieved", pushed / elapsed, "pushes/s")
            raw = redis.Redis.from_url(url)
            meta, events = QueueCommands(QueueLayout()).keys("boefje").meta, QueueCommands(QueueLayout()).keys("boefje").events
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the snapshotter applied the last event
                newest = raw.xrevrange(events, count=1)
                applied = raw.hget(meta, "applied")
                if not newest or (applied and stream_id(applied) >= stream_id(newest[0][0])):
                    break
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        data = json.loads(out.read_text())
        out.unlink()
    lags = sorted(data["lags_ms"])
    if not lags:
        raise RuntimeError("the snapshotter applied no events")
    ctx.detail("batches", {"count": len(data["batches"]), "mean_size": sum(data["batches"]) / len(data["batches"])})
    ctx.row("events applied", len(lags), "events")
    if len(lags) < pushed:
        ctx.note(f"{pushed - len(lags)} of {pushed} events not applied within 30 s of the last push")
    ctx.row("snapshot lag p50", percentile(lags, 50), "ms")
    ctx.row("snapshot lag p99", percentile(lags, 99), "ms", "< 250")
    ctx.row("snapshot lag max", lags[-1], "ms")
    ctx.row("snapshot batches (mean size)", sum(data["batches"]) / len(data["batches"]), "events")


def _push_steadily(url: str, seconds: float) -> tuple[int, float]:
    raw = redis.Redis.from_url(url)
    raw.execute_command(*library().load_command())
    commands = QueueCommands(QueueLayout())
    per_tick = int(RATE * TICK)
    rng = random.Random(11)
    pushed, t0 = 0, time.monotonic()
    next_tick, last_report = t0, t0
    for tick in range(int(seconds / TICK)):  # bounded in count; each tick is bounded in time
        calls = [commands.push("boefje", organisation=org, data=data, priority=priority)
                 for data, org, priority in (boefje_data(tick * per_tick + i, rng=rng) for i in range(per_tick))]
        pipe = raw.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call.command())
        refused = [r for r in pipe.execute() if isinstance(r, int)]
        if refused:
            raise RuntimeError(f"pushes refused: {refused}")
        pushed += per_tick
        next_tick += TICK
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - last_report > 2:
            last_report = time.monotonic()
            progress(f"snapshot: pushed {pushed:,} ({pushed / (last_report - t0):,.0f}/s)")
    return pushed, time.monotonic() - t0
