"""Direct-client throughput: batched push (``Client.push_many`` of 100 or 1,000 tasks: runs of
up to 256 pushes per script call) and batched pop
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
from redisched.queue.commands import PUSHES_PER_RUN, QueueCommands
from redisched.queue.records import TaskRecord
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
                layout = QueueLayout(prefix=f"push{batch}r{rep}")
                rates.append(_batched_push(raw, Client(redis.Redis.from_url(url), layout), n, batch, seed=rep))
                raw.delete(QueueCommands(layout).keys("boefje").events)
            ctx.detail(f"push_batch_{batch}_rates", rates)
            ctx.row(f"batched push, push_many of {batch} (client path)", median(rates), "tasks/s", ">= 25000")
        # The same with the arguments prebuilt: what Redis alone sustains.
        rates = []
        for rep in range(REPEATS):
            commands = QueueCommands(QueueLayout(prefix=f"fast{rep}"))
            keys, rng = commands.keys("boefje"), random.Random(rep)
            argvs = [fast_boefje_push_args(i, rng) for i in range(n)]
            t0 = time.perf_counter()
            for start in range(0, n, 1000):
                pipe = raw.pipeline(transaction=False)
                for run in range(start, min(n, start + 1000), PUSHES_PER_RUN):
                    args = [arg for argv in argvs[run:min(n, start + 1000, run + PUSHES_PER_RUN)] for arg in argv]
                    pipe.execute_command(*push_script.fcall(keys.all, args))
                pipe.execute()
            rates.append(n / (time.perf_counter() - t0))
            raw.delete(keys.events)
        ctx.row(f"batched push, runs of {PUSHES_PER_RUN}, ARGV prebuilt (Redis-bound)", median(rates), "tasks/s")

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


def _batched_push(raw: redis.Redis, client: Client, n: int, batch: int, seed: int) -> float:
    """``client.push_many`` of ``batch`` tasks at a time; every push must get in."""
    rng = random.Random(seed)
    tasks = [{"organisation": org, "data": data, "priority": priority}  # the caller's, made beforehand
             for data, org, priority in (boefje_data(i, rng=rng) for i in range(n))]
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        for outcome in client.push_many("boefje", tasks[start:start + batch]):
            if not isinstance(outcome, TaskRecord):
                raise RuntimeError(f"push refused: {outcome!r}")
    return n / (time.perf_counter() - t0)


def _fill_normalizer(raw: redis.Redis, commands: QueueCommands, n: int) -> None:
    client = Client(raw, commands.layout)
    for start in range(0, n, 1000):
        client.push_many("normalizer", [{"organisation": f"org{i % 10}", "data": normalizer_data(i), "priority": 1 + i % 1000}
                                        for i in range(start, min(n, start + 1000))])
