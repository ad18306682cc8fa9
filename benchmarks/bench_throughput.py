"""Direct-client throughput: batched push (a pipeline of push calls, each built by
``QueueCommands.push`` exactly as ``Client.queue(...).push`` builds it) and batched pop
(``pop(limit=100)`` on the normalizer queue), in tasks/s; plus single push and single pop
latency for reference. Every number is the median of a few repeats.
"""

from __future__ import annotations

import random
import time

import redis

from benchmarks.common import Context, boefje_data, fast_boefje_push_args, median, normalizer_data, progress, summary_us
from benchmarks.servers import private_redis
from redisched.client import Client
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.scripts import library, load

REPEATS = 3


def run(ctx: Context) -> None:
    n = ctx.scale(100_000, 20_000)
    with private_redis() as url:
        raw = redis.Redis.from_url(url)
        client = Client(redis.Redis.from_url(url), QueueLayout())
        push_script = load("push")
        raw.execute_command(*library().load_command())

        # --- batched push through the client's own command builder ----------------------------
        for batch in (100, 1000):
            rates = []
            for rep in range(REPEATS):
                commands = QueueCommands(QueueLayout(prefix=f"push{batch}r{rep}"))
                rates.append(_batched_push(raw, commands, n, batch, seed=rep))
                raw.delete(commands.keys("boefje").events)
            ctx.detail(f"push_batch_{batch}_rates", rates)
            ctx.row(f"batched push, pipeline of {batch} (client path)", median(rates), "tasks/s",
                    ">= 25000" if batch == 100 else "")
        # The same with the arguments prebuilt: what Redis alone sustains.
        rates = []
        for rep in range(REPEATS):
            commands = QueueCommands(QueueLayout(prefix=f"fast{rep}"))
            keys, rng = commands.keys("boefje"), random.Random(rep)
            argvs = [fast_boefje_push_args(i, rng) for i in range(n)]
            t0 = time.perf_counter()
            for start in range(0, n, 1000):
                pipe = raw.pipeline(transaction=False)
                for args in argvs[start:start + 1000]:
                    pipe.execute_command(*push_script.fcall(keys.all, args))
                pipe.execute()
            rates.append(n / (time.perf_counter() - t0))
            raw.delete(keys.events)
        ctx.row("batched push, pipeline of 1000, ARGV prebuilt (Redis-bound)", median(rates), "tasks/s")

        # --- batched pop on the normalizer queue ----------------------------------------------
        rates = []
        for rep in range(REPEATS):
            commands = QueueCommands(QueueLayout(prefix=f"pop{rep}"))
            progress(f"throughput: filling {n:,} normalizer tasks (repeat {rep + 1}/{REPEATS})")
            _fill_normalizer(raw, commands, n)
            queue = Client(redis.Redis.from_url(url), commands.layout).queue("normalizer")
            popped, t0, deadline = 0, time.perf_counter(), time.monotonic() + 120
            while popped < n and time.monotonic() < deadline:
                got = queue.pop(limit=100)
                if not got:
                    break
                popped += len(got)
            rates.append(popped / (time.perf_counter() - t0))
            raw.delete(commands.keys("normalizer").events)
        ctx.detail("pop_batch_100_rates", rates)
        ctx.row("batched pop, limit=100 (normalizer)", median(rates), "tasks/s", ">= 25000")

        # --- single calls, for reference ------------------------------------------------------
        commands = QueueCommands(QueueLayout(prefix="single"))
        queue = client.queue("boefje")
        queue = Client(redis.Redis.from_url(url), commands.layout).queue("boefje")
        samples, rng = [], random.Random(3)
        for i in range(ctx.scale(5000, 2000)):
            data, org, priority = boefje_data(10_000_000 + i, rng=rng)
            t = time.perf_counter_ns()
            queue.push(organisation=org, data=data, priority=priority)
            samples.append(time.perf_counter_ns() - t)
        s = summary_us(samples)
        ctx.row("single push p50 (boefje)", s["p50"], "µs")
        ctx.row("single push p99 (boefje)", s["p99"], "µs")
        _fill_normalizer(raw, commands, ctx.scale(5000, 2000))
        nqueue = Client(redis.Redis.from_url(url), commands.layout).queue("normalizer")
        samples = []
        for _ in range(ctx.scale(5000, 2000)):
            t = time.perf_counter_ns()
            got = nqueue.pop(limit=1)
            samples.append(time.perf_counter_ns() - t)
            if not got:
                break
        s = summary_us(samples)
        ctx.row("single pop p50 (normalizer, no filter)", s["p50"], "µs", "< 200")
        ctx.row("single pop p99 (normalizer, no filter)", s["p99"], "µs", "< 500")


def _batched_push(raw: redis.Redis, commands: QueueCommands, n: int, batch: int, seed: int) -> float:
    """Pipelines of ``batch`` pushes, each built with QueueCommands.push and checked with its
    parser, as a client's push_many would."""
    rng = random.Random(seed)
    payloads = [boefje_data(i, rng=rng) for i in range(n)]  # the caller's data, made beforehand
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        calls = [commands.push("boefje", organisation=org, data=data, priority=priority)
                 for data, org, priority in payloads[start:start + batch]]
        pipe = raw.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call.command())
        for call, reply in zip(calls, pipe.execute()):
            call.parse(reply)
    return n / (time.perf_counter() - t0)


def _fill_normalizer(raw: redis.Redis, commands: QueueCommands, n: int) -> None:
    for start in range(0, n, 1000):
        calls = [commands.push("normalizer", organisation=f"org{i % 10}", data=normalizer_data(i), priority=1 + i % 1000)
                 for i in range(start, min(n, start + 1000))]
        pipe = raw.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call.command())
        pipe.execute()
