"""Scaling with Redis Cluster shards: the boefje queue spread over k partitions on a k-master
cluster (k = 1, 2, 3, all on 127.0.0.1, slots split evenly so each master holds one
partition). Popper processes pop one task at a time with the runner's filter, through the
direct client (its cluster client), for a fixed time.

Reported per k: pops/s, each shard's CPU (INFO cpu: user + sys of the redis-server process)
during the run, and pops/s per busy shard-second: what the cluster could serve with its
busiest shard at 100 %, the part that grows with shards. On a 2-core machine the poppers
and the shards share two cores, so the measured pops/s are bounded by the clients, not by
Redis; the per-shard CPU shows how the Redis work divides.
"""

from __future__ import annotations

import multiprocessing
import time

import redis

from benchmarks.common import RUNNER_FILTER, Context, fill_boefje, poppable_numbers, progress
from redisched.client import Client
from redisched.queue.commands import QueueCommands
from tests.servers import private_cluster

SHARDS = (1, 2, 3)
POPPERS = 4
PREFIX = "shards"


def run(ctx: Context) -> None:
    seconds = ctx.scale(10, 4)
    depth = ctx.scale(80_000, 30_000)
    for shards in SHARDS:
        with private_cluster(shards) as urls:
            commands = QueueCommands(prefix=PREFIX, partitions=shards)
            cluster = redis.RedisCluster.from_url(urls[0])
            fill_boefje(cluster, commands, depth, numbers=poppable_numbers(depth), label=f"shards: k={shards}: ")
            sizes = [cluster.zcard(keys.queue) for keys in commands.layout.of("boefje")]
            progress(f"shards: k={shards}: queued per partition {sizes}")
            cpu_before = [_cpu_seconds(url) for url in urls]
            t0 = time.monotonic()
            with multiprocessing.get_context("spawn").Pool(POPPERS) as pool:
                counts = pool.starmap(_pop_for, [(urls[0], shards, seconds)] * POPPERS)
            elapsed = time.monotonic() - t0
            busy = [(_cpu_seconds(url) - before) / elapsed for url, before in zip(urls, cpu_before)]
            cluster.close()
        rate = sum(counts) / seconds
        ctx.detail(f"k{shards}", {"pops": sum(counts), "per_popper": counts, "shard_cpu": busy, "queued": sizes})
        ctx.row(f"runner pops, {shards} shard(s), {POPPERS} popper processes", rate, "pops/s")
        ctx.row(f"busiest shard's CPU, {shards} shard(s)", 100 * max(busy), "%",
                note="each shard: " + ", ".join(f"{100 * b:.0f} %" for b in busy))
        ctx.row(f"pops per busiest-shard CPU second, {shards} shard(s)", rate / max(busy), "pops/s",
                note="the cluster's Redis-bound ceiling")


def _pop_for(url: str, partitions: int, seconds: float) -> int:
    """One popper process: single pops with the runner's filter until the time is up."""
    client = Client(redis.RedisCluster.from_url(url), QueueCommands(prefix=PREFIX, partitions=partitions))
    queue = client.queue("boefje")
    popped, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and popped < 1_000_000:
        popped += len(queue.pop(RUNNER_FILTER, limit=1))
    client.close()
    return popped


def _cpu_seconds(url: str) -> float:
    node = redis.Redis.from_url(url)
    try:
        cpu = node.info("cpu")
    finally:
        node.close()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
