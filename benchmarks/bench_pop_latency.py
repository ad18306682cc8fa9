"""Pop latency with the direct client: one ``pop(filters=<runner filter>, limit=1)`` at a time,
at queue depths 1,000 / 100,000 / 1,000,000 (--quick: 1,000 / 100,000).

The depths are three queues (three key prefixes) on one private Redis, measured in
interleaved rounds, each round topped back up to its depth afterwards, so a burst of load
from elsewhere on the machine hits every depth alike. The depth ratio is the median over
rounds of the per-round p50 ratio.
"""

from __future__ import annotations

import gc
import time

import redis

from benchmarks.common import BOEFJES, MISMATCHED_FILTER, RUNNER_FILTER, Bounded, RUNNER_POPPABLE, Context, check_fast_fill, fill_boefje, median, percentile, progress, summary_us
from benchmarks.servers import private_redis
from redisched.client import Client
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout

ROUND = 200  # pops per depth per round


def run(ctx: Context) -> None:
    check_fast_fill()
    depths = [1_000, 100_000] if ctx.quick else [1_000, 100_000, 1_000_000]
    rounds = ctx.scale(40, 12)
    with private_redis() as url:
        raw = redis.Redis.from_url(url)
        queues, next_n = {}, {}
        for depth in depths:
            commands = QueueCommands(QueueLayout(prefix=f"d{depth}"))
            t0 = time.monotonic()
            fill_boefje(raw, commands, depth, label=f"pop_latency: depth {depth:,}: ", seconds=300)
            rate = depth / (time.monotonic() - t0)
            progress(f"pop_latency: depth {depth:,} filled at {rate:,.0f} tasks/s (pipelined EVALSHA of push.lua)")
            if depth == max(depths):
                ctx.row(f"fill rate (pipelined push, {depth:,})", rate, "tasks/s")
            queues[depth] = Client(redis.Redis.from_url(url), commands.layout).queue("boefje")
            next_n[depth] = depth
        ctx.detail("used_memory_mb_after_fill", raw.info("memory")["used_memory"] / 2**20)

        samples: dict[int, list[int]] = {d: [] for d in depths}
        round_p50: dict[int, list[float]] = {d: [] for d in depths}
        for depth in depths:  # warm-up: connections, script cache, allocator
            for _ in range(100):
                queues[depth].pop(filters=RUNNER_FILTER, limit=1)
            next_n[depth] = _top_up(raw, queues[depth], depth, next_n[depth])
        deadline = time.monotonic() + ctx.scale(240, 90)
        for r in range(rounds):
            if time.monotonic() > deadline:
                ctx.note(f"stopped after {r} of {rounds} rounds (time bound)")
                break
            for depth in depths if r % 2 == 0 else reversed(depths):
                queue, taken = queues[depth], []
                gc.collect()
                for _ in range(ROUND):
                    t = time.perf_counter_ns()
                    popped = queue.pop(filters=RUNNER_FILTER, limit=1)
                    taken.append(time.perf_counter_ns() - t)
                    if len(popped) != 1:
                        raise RuntimeError(f"pop at depth {depth} returned {len(popped)} tasks")
                samples[depth] += taken
                round_p50[depth].append(percentile(sorted(taken), 50))
                next_n[depth] = _top_up(raw, queue, depth, next_n[depth])
            if r % 5 == 4:
                progress(f"pop_latency: round {r + 1}/{rounds}: " + ", ".join(
                    f"{d:,}: p50 {median(round_p50[d]) / 1000:.0f} µs" for d in depths))

        for depth in depths:
            s = summary_us(samples[depth])
            ctx.detail(f"depth_{depth}", s)
            label = f"{depth // 1000:,}k" if depth < 1_000_000 else "1M"
            for key in ("p50", "p90", "p99", "max"):
                target = ""
                if depth == 100_000 and key == "p50":
                    target = "< 150"
                elif depth == 100_000 and key == "p99":
                    target = "< 400"
                ctx.row(f"pop {key} @{label} queued (runner filters)", s[key], "µs", target)
        deep = max(depths)
        ratios = [a / b for a, b in zip(round_p50[deep], round_p50[1_000])]
        label = "1M" if deep == 1_000_000 else "100k"
        ctx.row(f"pop p50 ratio {label}/1k (median of {len(ratios)} rounds)", median(ratios), "x", "<= 1.3")
        ctx.detail("round_ratios", ratios)
        stats = raw.info("commandstats").get("cmdstat_fcall", {})
        ctx.detail("fcall_commandstats", stats)
        _mismatched(ctx, url, raw)


def _mismatched(ctx: Context, url: str, raw: redis.Redis) -> None:
    """A runner whose plugin list names 2 boefjes whose image it lacks (MISMATCHED_FILTER):
    the pop is driven by the boefje index, their tasks fail the image filter, stay queued
    ahead of the poppable ones, and each pop walks over all of them again."""
    depth, pops = 10_000, 1_000
    commands = QueueCommands(QueueLayout(prefix="mismatch"))
    fill_boefje(raw, commands, depth)
    queue = Client(redis.Redis.from_url(url), commands.layout).queue("boefje")
    samples = []
    for _ in Bounded(pops, 60):
        t = time.perf_counter_ns()
        got = queue.pop(filters=MISMATCHED_FILTER, limit=1)
        samples.append(time.perf_counter_ns() - t)
        if not got:
            break
    first, last = summary_us(samples[:100]), summary_us(samples[-100:])
    ctx.row(f"pop p50, mismatched plugin list, first 100 pops @10k", first["p50"], "µs")
    ctx.row(f"pop p50, mismatched plugin list, pops {len(samples) - 99}-{len(samples)} @10k", last["p50"], "µs",
            note="grows with every pop: see profile findings")


def _top_up(raw: redis.Redis, queue, depth: int, next_n: int) -> int:
    """Put back as many tasks as were popped, all of them poppable, so every round sees the
    same depth and the same mix. Task numbers stay unique (and so do the dedup hashes)."""
    missing = depth - queue.qsize()
    if missing > 0:
        base = next_n // len(BOEFJES) + 1
        numbers = ((base + k // len(RUNNER_POPPABLE)) * len(BOEFJES) + RUNNER_POPPABLE[k % len(RUNNER_POPPABLE)]
                   for k in range(missing))
        fill_boefje(raw, queue.queues.commands, missing, start=next_n, batch=1000, numbers=numbers)
        next_n = (base + missing // len(RUNNER_POPPABLE) + 1) * len(BOEFJES)
    return next_n
