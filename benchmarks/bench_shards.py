"""Scaling with Redis Cluster shards: the boefje queue spread over k partitions on a k-master
cluster (k = 1, 2, 3, all on 127.0.0.1, slots split evenly so each master holds one
partition). Popper processes pop one task at a time with the runner's filter, through the
direct client (its cluster client), for a fixed time.

Reported per k: pops/s; the busiest shard's share of the pop scripts run (INFO
commandstats); the Redis CPU per pop, all shards together (INFO cpu of each redis-server);
and from those two the Redis-bound ceiling: the pops/s at which the busiest shard would be
at 100 % CPU, the figure that grows with shards. On a 2-core machine the poppers and the
shards share two cores, so the measured pops/s are bounded by the clients (and move with
whatever else runs), not by Redis; the shares are exact whatever the noise.
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
from redisched.queue.layout import QueueLayout
from redisched.queue.records import TaskRecord
from redisched.queue.scripts import library, load
from tests.support.servers import private_cluster

SHARDS = (1, 2, 3)
POPPERS = 4
PREFIX = "shards"


def run(ctx: Context) -> None:
    seconds = ctx.scale(10, 4)
    depth = ctx.scale(80_000, 30_000)
    for shards in SHARDS:
        with private_cluster(shards) as urls:
            commands = QueueCommands(QueueLayout(prefix=PREFIX, partitions=shards))
            cluster = redis.RedisCluster.from_url(urls[0])
            _fill(cluster, commands, depth)
            sizes = [cluster.zcard(keys.queue) for keys in commands.layout.of("boefje")]
            progress(f"shards: k={shards}: queued per partition {sizes}")
            with multiprocessing.get_context("spawn").Pool(POPPERS) as pool:
                pool.map(_pop_for, [None] * POPPERS)  # the workers are up before the clock starts
                before = [_shard_stats(url, reset=True) for url in urls]
                counts = pool.starmap(_pop_for, [(urls[0], shards, seconds)] * POPPERS)
                after = [_shard_stats(url) for url in urls]
            cluster.close()
        pops = sum(counts)
        scripts = [calls for _cpu, calls in after]
        cpu_per_pop = sum(a[0] - b[0] for a, b in zip(after, before)) / pops
        busiest_share = max(scripts) / sum(scripts)
        ctx.detail(f"k{shards}", {"pops": pops, "per_popper": counts, "scripts_per_shard": scripts, "queued": sizes})
        ctx.row(f"{shards} shard(s): runner pops, {POPPERS} popper processes", pops / seconds, "pops/s")
        ctx.row(f"{shards} shard(s): busiest shard's share of the pops", 100 * busiest_share, "%",
                note="pop scripts per shard: " + ", ".join(f"{c:,}" for c in scripts))
        ctx.row(f"{shards} shard(s): Redis CPU per pop, all shards", cpu_per_pop * 1e6, "µs")
        ctx.row(f"{shards} shard(s): Redis-bound ceiling", 1 / (cpu_per_pop * busiest_share), "pops/s",
                note="the pops/s at which the busiest shard would be at 100 % CPU")


def _fill(cluster: redis.RedisCluster, commands: QueueCommands, depth: int) -> None:
    """Push ``depth`` runner-poppable tasks, each into the partition of its hash, pipelined
    straight to the master holding that partition (redis-py's cluster pipeline refuses
    scripts)."""
    script = load("push")
    partitions = commands.layout.of("boefje")
    nodes = [cluster.get_node_from_key(keys.queue) for keys in partitions]
    clients = [redis.Redis(host=node.host, port=node.port) for node in nodes]
    for client in clients:
        client.execute_command(*library().load_command())
    rng, numbers = random.Random(1), list(poppable_numbers(depth))
    for start in range(0, depth, 2000):
        pipes = [client.pipeline(transaction=False) for client in clients]
        for n in numbers[start:start + 2000]:
            args = fast_boefje_push_args(n, rng)
            keys = commands.layout.for_hash("boefje", msgspec.json.decode(args[0], type=TaskRecord).hash)
            pipes[keys.partition].execute_command(*script.fcall(keys.all, args))
        for pipe, keys in zip(pipes, partitions):
            pipe.delete(keys.events)  # nothing reads the stream here
            if any(isinstance(own, int) for reply in pipe.execute()[:-1] for own in reply):  # one reply per push
                raise RuntimeError("a push was refused during the fill")
    for client in clients:
        client.close()


def _pop_for(url: str | None, partitions: int = 1, seconds: float = 0) -> int:
    """One popper process: single pops with the runner's filter until the time is up."""
    if url is None:
        return 0
    client = Client(redis.RedisCluster.from_url(url), QueueLayout(prefix=PREFIX, partitions=partitions))
    queue = client.queue("boefje")
    popped, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and popped < 1_000_000:
        popped += len(queue.pop(RUNNER_FILTER, limit=1))
    client.close()
    return popped


def _shard_stats(url: str, *, reset: bool = False) -> tuple[float, int]:
    """(CPU seconds the redis-server has used, pop scripts run since the reset)."""
    node = redis.Redis.from_url(url)
    try:
        if reset:
            node.config_resetstat()
        cpu = node.info("cpu")
        calls = node.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0)
    finally:
        node.close()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(calls)
