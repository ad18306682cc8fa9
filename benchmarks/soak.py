"""Soak: minutes of steady work with the direct client, the snapshotter and the lease reaper.

    python -m benchmarks.soak                 # 10 minutes at ~1,000 pops/s
    python -m benchmarks.soak --seconds 60    # the CI version

A private redis-server and a fresh database on the local Postgres; runners push at the pop
rate (topping the queue up to a fixed depth) and pop-then-complete with the lease token.
Every few seconds it samples Redis ``used_memory``, the number of leases, the tasks the
runners hold (in flight), and the snapshot lag (time since the oldest event Postgres does not
have yet). It asserts, once warmed up: memory flat (the last sample within +20 % of the first
steady one), no leaked leases (leases == in flight, at every sample within the runners'
count, and 0 == 0 at the end), lag bounded. Prints a table.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from redisched.client import Client  # noqa: E402
from redisched.history.snapshotter import stream_id  # noqa: E402
from redisched.queue.commands import QueueCommands  # noqa: E402
from redisched.queue.keys import QueueKeys  # noqa: E402

WARMUP_S = 5.0
MEMORY_GROWTH_LIMIT = 0.20


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


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pops = self.pushes = self.completes = self.in_flight = 0
        self.errors = 0

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


# The normalizer queue: its tasks link no schedule. Boefje pushes with ever-new objects would
# grow the schedule mirror by one entry per (boefje, object, organisation), as they should
# (it is bounded by the install, not by time): a soak would measure that, not a leak.
QUEUE = "normalizer"


def normalizer_data(task_id: str, n: int) -> dict:
    return {
        "id": task_id,
        "normalizer": {"id": f"normalizer-{n % 20}", "version": None},
        "raw_data": {
            "id": str(uuid.uuid4()),
            "boefje_meta": {
                "id": str(uuid.uuid4()),
                "boefje": {"id": "nmap", "version": None},
                "input_ooi": f"IPAddressV4|internet|10.0.{n % 250}.{n % 251}",
                "arguments": {},
                "organization": f"org{n % 5}",
            },
            "mime_types": [{"value": "boefje/nmap"}],
        },
    }


def runner(url: str, prefix: str, lease_ms: int, counters: Counters, rate: float, stop: threading.Event, deadline: float) -> None:
    """Pop one, complete it with its token, at ``rate`` per second."""
    client = Client(redis.Redis.from_url(url, socket_timeout=10), QueueCommands(prefix=prefix, dispatch_lease_ms=lease_ms))
    queue = client.queue(QUEUE)
    interval, next_at = 1.0 / rate, time.monotonic()
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            popped = queue.pop(limit=1)
            for record in popped:
                counters.add(pops=1, in_flight=1)
                try:
                    queue.patch(record.id, {"status": "completed"}, token=record.lease)
                    counters.add(completes=1)
                except Exception:  # noqa: BLE001 - counted; the lease then expires and is reaped
                    counters.add(errors=1)
                finally:
                    counters.add(in_flight=-1)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - 1)
    finally:
        client.close()


def pusher(url: str, prefix: str, depth: int, counters: Counters, rate: float, stop: threading.Event, deadline: float) -> None:
    """Push at ``rate`` per second while the queue is below ``depth`` (the push rate follows
    the pop rate: the queue stays about ``depth`` deep, so memory should stay flat)."""
    client = Client(redis.Redis.from_url(url, socket_timeout=10), QueueCommands(prefix=prefix))
    queue = client.queue(QUEUE)
    interval, next_at, n = 1.0 / rate, time.monotonic(), 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if queue.qsize() < depth:
                for _ in range(10):  # ten a tick
                    task_id = str(uuid.uuid4())
                    queue.push(organisation=f"org{n % 5}", priority=n % 1000 + 1, data=normalizer_data(task_id, n))
                    n += 1
                    counters.add(pushes=1)
            next_at += interval * 10
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - 1)
    finally:
        client.close()


def snapshot_lag(client: redis.Redis, keys: QueueKeys) -> float:
    """Seconds since the oldest event Postgres does not have yet was written (0: none)."""
    applied = client.hget(keys.meta, "applied")
    start = "(" + applied.decode() if applied else "-"
    oldest = client.xrange(keys.events, min=start, count=1)
    if not oldest:
        return 0.0
    return max(0.0, time.time() - stream_id(oldest[0][0])[0] / 1000)


def soak(seconds: float, pops_per_s: float, sample_every: float, depth: int, lag_limit: float, runners: int = 3) -> list[Sample]:
    from benchmarks.servers import private_database, private_redis
    from tests.faults.harness import Background

    prefix = f"soak{uuid.uuid4().hex[:6]}"
    lease_ms = 5000
    samples: list[Sample] = []
    with private_redis() as url, private_database() as dsn:
        import asyncio

        from redisched.history.migrate import migrate

        asyncio.run(migrate(dsn))
        counters, stop = Counters(), threading.Event()
        deadline = time.monotonic() + seconds + 30  # a hard bound on every loop
        with Background(url, dsn, prefix, lease_ms=lease_ms, reap_every=1.0) as background:
            threads = [
                threading.Thread(target=pusher, args=(url, prefix, depth, counters, pops_per_s * 0.6, stop, deadline), daemon=True)
                for _ in range(2)
            ] + [
                threading.Thread(target=runner, args=(url, prefix, lease_ms, counters, pops_per_s / runners, stop, deadline), daemon=True)
                for _ in range(runners)
            ]
            for thread in threads:
                thread.start()
            probe = redis.Redis.from_url(url, socket_timeout=10)
            keys = QueueKeys(prefix, QUEUE)
            started = time.monotonic()
            try:
                while (elapsed := time.monotonic() - started) < seconds:
                    time.sleep(min(sample_every, max(0.0, seconds - elapsed)))
                    with counters.lock:
                        pops, pushes, in_flight = counters.pops, counters.pushes, counters.in_flight
                    samples.append(Sample(
                        t=time.monotonic() - started,
                        used_memory=probe.info("memory")["used_memory"],
                        leases=probe.zcard(keys.leases),
                        in_flight=in_flight,
                        queued=probe.zcard(keys.queue),
                        lag_s=snapshot_lag(probe, keys),
                        pops=pops,
                        pushes=pushes,
                    ))  # fmt: skip
                    print_row(samples[-1], samples[-2] if len(samples) > 1 else None)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            time.sleep(0.5)
            final_leases = probe.zcard(keys.leases)
            drained = background.drained(30)
            probe.close()
        print(f"end: leases {final_leases}, in flight {counters.in_flight}, errors {counters.errors}, "
              f"pops {counters.pops}, completes {counters.completes}, drained {drained}")  # fmt: skip
        assert final_leases == 0 == counters.in_flight, f"leases leaked: {final_leases} leases, {counters.in_flight} in flight"
        assert drained, "the snapshotter did not drain at the end"
    check(samples, depth, pops_per_s, lag_limit, runners)
    return samples


def print_row(sample: Sample, previous: Sample | None) -> None:
    if previous is None:
        print(f"{'t (s)':>6} {'used_memory':>12} {'queued':>7} {'leases':>6} {'in flight':>9} {'lag (ms)':>9} {'pops/s':>7} {'pushes/s':>8}")
    dt = sample.t - (previous.t if previous else 0.0)
    pops = (sample.pops - (previous.pops if previous else 0)) / dt
    pushes = (sample.pushes - (previous.pushes if previous else 0)) / dt
    print(f"{sample.t:6.1f} {sample.used_memory:12,d} {sample.queued:7d} {sample.leases:6d} {sample.in_flight:9d} "
          f"{sample.lag_s * 1000:9.0f} {pops:7.0f} {pushes:8.0f}", flush=True)  # fmt: skip


def check(samples: list[Sample], depth: int, pops_per_s: float, lag_limit: float, runners: int) -> None:
    """Steady = after the warm-up, from the first sample with the queue at its depth."""
    filled = next((i for i, s in enumerate(samples) if s.t >= WARMUP_S and s.queued >= 0.9 * depth), len(samples))
    steady = samples[filled:]
    assert len(steady) >= 2, "too short to judge: run longer"
    first, last = steady[0], steady[-1]
    growth = last.used_memory / first.used_memory - 1
    rate = (last.pops - first.pops) / (last.t - first.t)
    worst_lag = max(s.lag_s for s in steady)
    leak = max(abs(s.leases - s.in_flight) for s in steady)
    print(f"memory {first.used_memory:,d} -> {last.used_memory:,d} ({growth:+.1%}); pops/s {rate:.0f}; "
          f"worst lag {worst_lag * 1000:.0f} ms; worst |leases - in flight| {leak}")  # fmt: skip
    assert growth <= MEMORY_GROWTH_LIMIT, f"memory grew {growth:.1%} (limit {MEMORY_GROWTH_LIMIT:.0%})"
    assert leak <= runners, f"leases and tasks in flight differ by {leak} (> {runners} runners)"
    assert worst_lag <= lag_limit, f"snapshot lag reached {worst_lag:.2f} s (limit {lag_limit} s)"
    assert rate >= 0.5 * pops_per_s, f"only {rate:.0f} pops/s of the {pops_per_s:.0f} asked"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="how long (default 600)")
    parser.add_argument("--rate", type=float, default=1000, help="pops per second (default 1000)")
    parser.add_argument("--every", type=float, default=5, help="seconds between samples (default 5)")
    parser.add_argument("--depth", type=int, default=1000, help="queue depth kept (default 1000)")
    parser.add_argument("--lag-limit", type=float, default=2.0, help="worst snapshot lag allowed, s (default 2)")
    args = parser.parse_args(argv)
    soak(args.seconds, args.rate, args.every, args.depth, args.lag_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
