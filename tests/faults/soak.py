"""Soak: minutes of steady work with the direct client, the snapshotter and the lease reaper.

    python -m benchmarks.soak                 # 10 minutes at 1,000 pops/s
    python -m benchmarks.soak --seconds 60    # tests/faults/test_soak_short.py

(The code lives here, under tests/, so that the test needs nothing from benchmarks/.)

A private redis-server and a fresh database on the local Postgres. Runner processes (each
its own Client, a share of the rate) pop one task at a time and complete it with a PATCH
carrying the pop's lease token; a pusher process keeps the queue about a fixed depth deep
with pipelined pushes. The load processes run niced, so that Redis, Postgres and the
snapshotter and reaper (in this process) come first for the CPU, as they would with the
runners on other machines. Every few seconds it samples Redis ``used_memory``, the number of
leases, the tasks the runners hold (in flight, counted in shared memory across the
processes), and the snapshot lag (time since the oldest event Postgres does not have yet).
It asserts, once warmed up: memory flat (with the queue at its depth, the floor of the last
third of the samples within +20 % of the floor of the first third), no leaked leases (leases
== in flight, at every sample within the runners' count, and 0 == 0 at the end), lag
bounded, and at least half the asked rate achieved. Prints a table and the achieved rate.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from redisched.client import Client  # noqa: E402
from redisched.history.snapshotter import stream_id  # noqa: E402
from redisched.queue.commands import QueueCommands  # noqa: E402
from redisched.queue.layout import QueueLayout
from redisched.queue.keys import QueueKeys  # noqa: E402
from redisched.queue.scripts import library  # noqa: E402
from tests.factories import normalizer_data  # noqa: E402

WARMUP_S = 5.0
MEMORY_GROWTH_LIMIT = 0.20
PUSH_BATCH = 20  # pushes per pipeline
LOAD_NICE = 5  # the load processes' niceness (see load_process)
READY_S = 60  # the load processes start (import, connect) within this, or the soak fails


@dataclass
class Sample:
    t: float
    used_memory: int
    leases: int
    in_flight: int
    queued: int
    lag_s: float
    pops: int
    pushes: int


@dataclass
class Summary:
    pops_per_s: float  # achieved, over the steady run
    memory_floor: tuple[int, int]  # lowest used_memory, queue at depth, of the steady run's first and last thirds
    memory_range: tuple[int, int]  # lowest and highest, queue at depth
    worst_lag_s: float
    worst_leak: int  # |leases - in flight|
    samples: list[Sample]


FIELDS = ("pops", "pushes", "completes", "in_flight", "errors")


class Counters:
    """Shared by every process: one 64-bit integer per field, under one lock."""

    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self.values = ctx.Array("q", len(FIELDS))

    def add(self, **deltas: int) -> None:
        with self.values.get_lock():
            for name, delta in deltas.items():
                self.values[FIELDS.index(name)] += delta

    def read(self) -> dict[str, int]:
        with self.values.get_lock():
            return dict(zip(FIELDS, self.values[:]))


# The normalizer queue: its tasks link no schedule. Boefje pushes with ever-new objects would
# grow the schedule mirror by one entry per (boefje, object, organisation), as they should
# (it is bounded by the install, not by time): a soak would measure that, not a leak.
QUEUE = "normalizer"


def paced(rate: float, stop, deadline: float):  # noqa: ANN001, ANN201 - a multiprocessing Event
    """Yields at ``rate`` per second until ``stop`` or ``deadline`` (after a stall it catches up
    at most 1 s of the missed yields)."""
    interval, next_at = 1.0 / rate, time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        yield
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic() - 1)


def connect(url: str) -> redis.Redis:
    """A load process is one thread: one connection, no pool to take it from at every call."""
    return redis.Redis.from_url(url, socket_timeout=10, single_connection_client=True)


@contextlib.contextmanager
def load_process(stop) -> Iterator[None]:  # noqa: ANN001 - a multiprocessing Event
    """The body of a load process. Ctrl-C is the parent's: it stops us through ``stop`` (a
    Ctrl-C also ends the private redis-server, so Redis gone with ``stop`` set within a second
    is a quiet end). The system under test (Redis, Postgres, the snapshotter) comes first for
    the CPU, as it would with the runners on other machines: short of CPU, the achieved rate
    drops, not the lag."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(LOAD_NICE)
    try:
        yield
    except (redis.ConnectionError, threading.BrokenBarrierError):
        if not stop.wait(1):
            raise


def runner(url: str, prefix: str, lease_ms: int, counters: Counters, rate: float, ready, stop, deadline: float) -> None:  # noqa: ANN001
    """A process: pop one, complete it with its token, at ``rate`` per second."""
    client = Client(connect(url), QueueLayout(prefix=prefix, dispatch_lease_ms=lease_ms))
    queue = client.queue(QUEUE)
    with load_process(stop):
        ready.wait(READY_S)
        for _ in paced(rate, stop, deadline):
            for record in queue.pop(limit=1):
                counters.add(pops=1, in_flight=1)
                outcome = "errors"  # not completed: the lease expires and the reaper requeues it
                try:
                    if queue.patch(record.id, {"status": "completed"}, token=record.lease) is not None:
                        outcome = "completes"
                except Exception:  # noqa: BLE001 - counted
                    pass
                finally:
                    counters.add(in_flight=-1, **{outcome: 1})
    client.close()


def pusher(url: str, prefix: str, depth: int, counters: Counters, rate: float, ready, stop, deadline: float) -> None:  # noqa: ANN001
    """A process: fills the queue to ``depth`` before the clock starts, then pushes
    ``PUSH_BATCH`` at a time, at most ``rate`` per second, while the queue is below ``depth``
    (the push rate follows the pop rate: memory should stay flat)."""
    client = Client(connect(url), QueueLayout(prefix=prefix))
    queue = client.queue(QUEUE)
    with load_process(stop):
        client.redis.execute_command(*library().load_command())  # the pipeline sends FCALL only
        n = 0
        while queue.qsize() < depth and n < 2 * depth:  # the fill is no part of the measured pushes
            counters.add(errors=PUSH_BATCH - push_batch(client, n))
            n += PUSH_BATCH
        ready.wait(READY_S)
        for _ in paced(rate / PUSH_BATCH, stop, deadline):
            if queue.qsize() < depth:
                pushed = push_batch(client, n)
                counters.add(pushes=pushed, errors=PUSH_BATCH - pushed)
                n += PUSH_BATCH
    client.close()


def numbered_normalizer_data(n: int) -> dict:
    """A normalizer task of one of 10 organisations on an address of its own."""
    data = normalizer_data(organization=f"org{n % 10}")
    data["raw_data"]["boefje_meta"]["input_ooi"] = f"IPAddressV4|internet|10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return data


def push_batch(client: Client, first: int) -> int:
    """``PUSH_BATCH`` pushes in one pipeline, one EVALSHA each (what Client.run sends one by
    one); returns how many were taken."""
    calls = [client.commands.push(QUEUE, organisation=f"org{i % 5}", priority=i % 1000 + 1, data=numbered_normalizer_data(i))
             for i in range(first, first + PUSH_BATCH)]  # fmt: skip
    pipe = client.redis.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command(*call.command())
    pushed = 0
    for call, reply in zip(calls, pipe.execute(raise_on_error=False)):
        try:
            if isinstance(reply, Exception):
                raise reply
            call.parse(reply)
            pushed += 1
        except Exception:  # noqa: BLE001 - a failed or refused push is counted as an error
            pass
    return pushed


def snapshot_lag(client: redis.Redis, keys: QueueKeys) -> float:
    """Seconds since the oldest event Postgres does not have yet was written (0: none)."""
    applied = client.hget(keys.meta, "applied")
    start = "(" + applied.decode() if applied else "-"
    oldest = client.xrange(keys.events, min=start, count=1)
    if not oldest:
        return 0.0
    return max(0.0, time.time() - stream_id(oldest[0][0])[0] / 1000)


def soak(
    seconds: float, pops_per_s: float, sample_every: float, depth: int, lag_limit: float, runners: int = 4, min_rate: float = 0.5
) -> Summary:
    """``runners`` processes pop, one pushes; fails when a check fails or fewer than
    ``min_rate`` × ``pops_per_s`` pops per second were achieved."""
    from tests.conftest import PG_ADMIN_DSN
    from tests.support.databases import throwaway_database
    from tests.support.servers import private_redis
    from tests.faults.background import Background

    prefix = f"soak{uuid.uuid4().hex[:6]}"
    lease_ms = 5000
    samples: list[Sample] = []
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with private_redis() as url, throwaway_database(os.environ.get("REDISCHED_BENCH_PG_DSN", PG_ADMIN_DSN), "redisched_bench") as dsn:
        import asyncio

        from redisched.history.migrate import migrate

        asyncio.run(migrate(dsn))
        counters, stop, ready = Counters(ctx), ctx.Event(), ctx.Barrier(runners + 2)
        deadline = time.monotonic() + READY_S + seconds + 30  # a hard bound on every loop
        with Background(url, dsn, prefix, lease_ms=lease_ms, reap_every=1.0) as background:
            procs = [ctx.Process(target=pusher, args=(url, prefix, depth, counters, pops_per_s * 2, ready, stop, deadline), daemon=True)]
            procs += [ctx.Process(target=runner, args=(url, prefix, lease_ms, counters, pops_per_s / runners, ready, stop, deadline), daemon=True)
                      for _ in range(runners)]  # fmt: skip
            probe = redis.Redis.from_url(url, socket_timeout=10)
            keys = QueueKeys(prefix, QUEUE)
            try:
                for proc in procs:
                    proc.start()
                ready.wait(READY_S)  # the clock starts when every load process is connected
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < seconds:
                    time.sleep(min(sample_every, max(0.0, seconds - elapsed)))
                    now = counters.read()
                    samples.append(Sample(
                        t=time.monotonic() - started,
                        used_memory=probe.info("memory")["used_memory"],
                        leases=probe.zcard(keys.leases),
                        in_flight=now["in_flight"],
                        queued=probe.zcard(keys.queue),
                        lag_s=snapshot_lag(probe, keys),
                        pops=now["pops"],
                        pushes=now["pushes"],
                    ))  # fmt: skip
                    print_row(samples[-1], samples[-2] if len(samples) > 1 else None)
            finally:
                stop.set()
                ready.abort()  # a process still waiting (the soak failed before the start) stops waiting
                for proc in procs:
                    proc.join(30)
                for proc in procs:
                    if proc.is_alive():  # stuck past its bounds: killed
                        proc.kill()
                        proc.join(5)
            time.sleep(0.5)
            final_leases = probe.zcard(keys.leases)
            drained = background.drained(30)
            probe.close()
        end = counters.read()
        print(f"end: leases {final_leases}, in flight {end['in_flight']}, errors {end['errors']}, "
              f"pops {end['pops']}, completes {end['completes']}, pushes {end['pushes']}, drained {drained}")  # fmt: skip
        assert all(proc.exitcode == 0 for proc in procs), f"load processes failed: {[proc.exitcode for proc in procs]}"
        assert final_leases == 0 == end["in_flight"], f"leases leaked: {final_leases} leases, {end['in_flight']} in flight"
        assert drained, "the snapshotter did not drain at the end"
    return check(samples, depth, pops_per_s, lag_limit, runners, min_rate)


def print_row(sample: Sample, previous: Sample | None) -> None:
    if previous is None:
        print(f"{'t (s)':>6} {'used_memory':>12} {'queued':>7} {'leases':>6} {'in flight':>9} {'lag (ms)':>9} {'pops/s':>7} {'pushes/s':>8}")
    dt = sample.t - (previous.t if previous else 0.0)
    pops = (sample.pops - (previous.pops if previous else 0)) / dt
    pushes = (sample.pushes - (previous.pushes if previous else 0)) / dt
    print(f"{sample.t:6.1f} {sample.used_memory:12,d} {sample.queued:7d} {sample.leases:6d} {sample.in_flight:9d} "
          f"{sample.lag_s * 1000:9.0f} {pops:7.0f} {pushes:8.0f}", flush=True)  # fmt: skip


def check(samples: list[Sample], depth: int, pops_per_s: float, lag_limit: float, runners: int, min_rate: float) -> Summary:
    """Steady = after the warm-up, from the first sample with the queue at its depth. Memory
    is judged on its floor over the samples with the queue at its depth (a snapshot backlog
    comes and goes, a leak raises the floor): the lowest of the last third of them against
    the lowest of the first third."""
    filled = next((i for i, s in enumerate(samples) if s.t >= WARMUP_S and s.queued >= 0.9 * depth), len(samples))
    steady = samples[filled:]
    full = [s.used_memory for s in steady if s.queued >= 0.9 * depth]
    assert len(steady) >= 2 and len(full) >= 2, "too short to judge: run longer"
    first, last, third = steady[0], steady[-1], max(1, len(full) // 3)
    summary = Summary(
        pops_per_s=(last.pops - first.pops) / (last.t - first.t),
        memory_floor=(min(full[:third]), min(full[-third:])),
        memory_range=(min(full), max(full)),
        worst_lag_s=max(s.lag_s for s in steady),
        worst_leak=max(abs(s.leases - s.in_flight) for s in steady),
        samples=samples,
    )
    (early, late), (low, high) = summary.memory_floor, summary.memory_range
    growth = late / early - 1
    print(f"pops/s {summary.pops_per_s:.0f} of {pops_per_s:.0f} asked; memory floor {early:,d} -> {late:,d} ({growth:+.1%}), "
          f"range {low:,d}..{high:,d} over {len(full)} samples at depth; worst lag {summary.worst_lag_s * 1000:.0f} ms; "
          f"worst |leases - in flight| {summary.worst_leak}", flush=True)  # fmt: skip
    assert growth <= MEMORY_GROWTH_LIMIT, f"memory grew {growth:.1%} (limit {MEMORY_GROWTH_LIMIT:.0%})"
    assert summary.worst_leak <= runners, f"leases and tasks in flight differ by {summary.worst_leak} (> {runners} runners)"
    assert summary.worst_lag_s <= lag_limit, f"snapshot lag reached {summary.worst_lag_s:.2f} s (limit {lag_limit} s)"
    assert summary.pops_per_s >= min_rate * pops_per_s, f"only {summary.pops_per_s:.0f} pops/s of the {pops_per_s:.0f} asked"
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="how long (default 600)")
    parser.add_argument("--rate", type=float, default=1000, help="pops per second (default 1000)")
    parser.add_argument("--runners", type=int, default=4, help="runner processes sharing the rate (default 4)")
    parser.add_argument("--every", type=float, default=5, help="seconds between samples (default 5)")
    parser.add_argument("--depth", type=int, default=1000, help="queue depth kept (default 1000)")
    parser.add_argument("--lag-limit", type=float, default=2.0, help="worst snapshot lag allowed, s (default 2)")
    parser.add_argument("--min-rate", type=float, default=0.5, help="fraction of --rate to achieve (default 0.5)")
    args = parser.parse_args(argv)
    soak(args.seconds, args.rate, args.every, args.depth, args.lag_limit, args.runners, args.min_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
