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
import random
import time

import msgspec
import redis

from benchmarks.common import RUNNER_FILTER, Context, fast_boefje_push_args, poppable_numbers, progress
from redisched.client import Client
from redisched.queue.commands import QueueCommands
from redisched.queue.records import TaskRecord
from redisched.queue.scripts import load
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
            _fill(cluster, commands, depth)
            sizes = [cluster.zcard(keys.queue) for keys in commands.layout.of("boefje")]
            progress(f"shards: k={shards}: queued per partition {sizes}")
            with multiprocessing.get_context("spawn").Pool(POPPERS) as pool:
                pool.map(_pop_for, [None] * POPPERS)  # the workers are up before the clock starts
                cpu_before = [_cpu_seconds(url) for url in urls]
                t0 = time.monotonic()
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


def _fill(cluster: redis.RedisCluster, commands: QueueCommands, depth: int) -> None:
    """Push ``depth`` runner-poppable tasks, each into the partition of its hash, pipelined
    straight to the master holding that partition (redis-py's cluster pipeline refuses
    EVALSHA)."""
    script = load("push")
    partitions = commands.layout.of("boefje")
    nodes = [cluster.get_node_from_key(keys.queue) for keys in partitions]
    clients = [redis.Redis(host=node.host, port=node.port) for node in nodes]
    for client in clients:
        client.script_load(script.source)
    rng, numbers = random.Random(1), list(poppable_numbers(depth))
    for start in range(0, depth, 2000):
        pipes = [client.pipeline(transaction=False) for client in clients]
        for n in numbers[start:start + 2000]:
            args = fast_boefje_push_args(n, rng)
            keys = commands.layout.for_hash("boefje", msgspec.json.decode(args[0], type=TaskRecord).hash)
            pipes[keys.partition].evalsha(script.sha, len(keys.all), *keys.all, *args)
        for pipe, keys in zip(pipes, partitions):
            pipe.delete(keys.events)  # nothing reads the stream here
            if any(isinstance(reply, int) for reply in pipe.execute()[:-1]):
                raise RuntimeError("a push was refused during the fill")
    for client in clients:
        client.close()


def _pop_for(url: str | None, partitions: int = 1, seconds: float = 0) -> int:
    """One popper process: single pops with the runner's filter until the time is up."""
    if url is None:
        return 0
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
