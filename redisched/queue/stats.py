"""What the dashboard shows of Redis, read in one round trip whatever the queue depth: one
``lua/stats.lua`` call per queue partition (depth, leases, the rates ring, organisations,
limit groups),
the length of each partition's quarantine stream, the server's memory and the API processes'
heartbeats, all in one pipeline.

On a Redis Cluster, where redis-py's pipeline refuses scripts, the same reads go out
concurrently: one round trip per node, side by side.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from redisched.queue.driver import routed
from redisched.queue.keys import RATE_BUCKET_SECONDS, RATE_OPS, RATE_SLOTS, QueueKeys, api_seen_key
from redisched.queue.layout import QueueLayout
from redisched.queue.scripts import is_not_loaded, library, load

API_SEEN_SECONDS = 30  # an API process not heard from for this long is not shown
API_SEEN_FORGET_SECONDS = 3600  # ... and dropped from the set after this long


@dataclass(frozen=True)
class LeaseHead:
    """The lease that expires first, and its task."""

    task_id: str
    expires_ms: int
    status: str
    modified_us: int


@dataclass
class GroupStats:
    """A limit group's state in one queue (its partitions added up)."""

    spacing_ms: int  # cooldown or rate: the least time between two of its tasks (0: none)
    concurrency: int  # 0: no such limit
    in_use: int  # its dispatched and running tasks
    next_allowed_ms: int  # none of its tasks may go before this (0: never set)
    queued: int


@dataclass
class QueueStats:
    queue_id: str
    now_us: int = 0
    depth: int = 0
    leased: int = 0
    expired: int = 0  # leases past their expiry, not reaped yet
    next_lease: LeaseHead | None = None
    last_activity_us: int | None = None
    stream_length: int = 0
    quarantined: int = 0  # events Postgres refused, set aside in the dead-letter stream
    snapshot_lag_seconds: float = 0.0
    newest_bucket: int = 0
    rates: dict[str, list[int]] = field(default_factory=dict)  # op -> counts per bucket, oldest first
    organisations: dict[str, int] = field(default_factory=dict)  # organisation -> queued tasks
    organisations_capped: bool = False  # more organisations have work than were counted
    groups: dict[str, GroupStats] = field(default_factory=dict)  # limit group -> its state
    groups_capped: bool = False  # more limit groups are known than were read


@dataclass
class RedisSnapshot:
    queues: dict[str, QueueStats]
    used_memory: int
    max_memory: int
    api_processes: list[tuple[str, float]]  # (name, seconds since it was last seen)
    round_trips: int = 1


def stats_args(buckets: int, max_orgs: int, max_groups: int) -> list[int]:
    return [max(1, min(buckets, RATE_SLOTS)), max_orgs, max_groups]


def parse_stats(queue_id: str, reply: list[Any], buckets: int, max_orgs: int) -> QueueStats:
    """One partition's reply (lua/stats.lua's header)."""
    text = [item.decode() if isinstance(item, bytes) else item for item in reply]
    stats = QueueStats(queue_id, now_us=int(text[0]), depth=int(text[1]), leased=int(text[2]), expired=int(text[3]))
    if text[4] != "":
        stats.next_lease = LeaseHead(text[4], int(float(text[5])), text[6], int(text[7]))
    stats.last_activity_us = int(text[8]) if text[8] != "" else None
    stats.stream_length = int(text[9])
    stats.snapshot_lag_seconds = _lag_seconds(text[10], text[11])
    stats.newest_bucket = int(text[12])
    at = 13
    for op in RATE_OPS:
        stats.rates[op] = [int(count) for count in text[at : at + buckets]]
        at += buckets
    counted = int(text[at])
    pairs = text[at + 1 : at + 1 + 2 * counted]
    stats.organisations = {pairs[i]: int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    stats.organisations_capped = counted >= max_orgs
    at += 1 + 2 * counted
    known, returned = int(text[at]), int(text[at + 1])
    for i in range(at + 2, at + 2 + 6 * returned, 6):
        stats.groups[text[i]] = GroupStats(*(int(value) for value in text[i + 1 : i + 6]))
    stats.groups_capped = known > returned
    return stats


def merge(parts: list[QueueStats]) -> QueueStats:
    """A queue's partitions added up (the worst lag, the first lease to expire)."""
    if len(parts) == 1:
        return parts[0]
    total = QueueStats(parts[0].queue_id, now_us=max(p.now_us for p in parts))
    total.newest_bucket = max(p.newest_bucket for p in parts)
    for part in parts:
        total.depth += part.depth
        total.leased += part.leased
        total.expired += part.expired
        total.stream_length += part.stream_length
        total.quarantined += part.quarantined
        total.snapshot_lag_seconds = max(total.snapshot_lag_seconds, part.snapshot_lag_seconds)
        if part.last_activity_us is not None:
            total.last_activity_us = max(total.last_activity_us or 0, part.last_activity_us)
        if part.next_lease and (total.next_lease is None or part.next_lease.expires_ms < total.next_lease.expires_ms):
            total.next_lease = part.next_lease
        shift = total.newest_bucket - part.newest_bucket  # a partition read in the bucket before
        for op, counts in part.rates.items():
            aligned = counts[shift:] + [0] * shift if shift else counts
            total.rates[op] = [a + b for a, b in zip(total.rates.get(op, [0] * len(counts)), aligned)]
        for org, depth in part.organisations.items():
            total.organisations[org] = total.organisations.get(org, 0) + depth
        total.organisations_capped |= part.organisations_capped
        for group, state in part.groups.items():
            seen = total.groups.setdefault(group, GroupStats(state.spacing_ms, state.concurrency, 0, 0, 0))
            seen.in_use += state.in_use
            seen.queued += state.queued
            seen.next_allowed_ms = max(seen.next_allowed_ms, state.next_allowed_ms)
        total.groups_capped |= part.groups_capped
    return total


def _lag_seconds(newest: str, applied: str) -> float:
    """How far Postgres is behind this stream: the age gap between its newest event and the
    last one the snapshotter applied (as snapshotter.backlog_seconds)."""
    if newest == "":
        return 0.0
    newest_ms, newest_seq = (int(part) for part in newest.split("-"))
    if applied == "":
        return 0.0
    applied_ms, applied_seq = (int(part) for part in applied.split("-"))
    if (applied_ms, applied_seq) >= (newest_ms, newest_seq):
        return 0.0
    return max(0.0, (newest_ms - applied_ms) / 1000)


async def read_snapshot(
    redis: Redis | RedisCluster, layout: QueueLayout, *, buckets: int = 90, max_orgs: int = 50, max_groups: int = 50
) -> RedisSnapshot:
    """Every figure the dashboard takes from Redis, in one round trip on one Redis."""
    partitions = layout.every()
    args = stats_args(buckets, max_orgs, max_groups)
    now_ms = time.time() * 1000
    if isinstance(redis, RedisCluster):
        replies, dead, memory, seen = await _read_on_cluster(redis, layout, partitions, args, now_ms)
    else:
        replies, dead, memory, seen = await _read_in_pipeline(redis, layout, partitions, args, now_ms)
    by_queue: dict[str, list[QueueStats]] = {}
    for keys, reply, quarantined in zip(partitions, replies, dead):
        stats = parse_stats(keys.queue_id, reply, args[0], max_orgs)
        stats.quarantined = int(quarantined)
        by_queue.setdefault(keys.queue_id, []).append(stats)
    processes = [(_text(name), max(0.0, (now_ms - score) / 1000)) for name, score in seen]
    return RedisSnapshot(
        queues={queue_id: merge(parts) for queue_id, parts in by_queue.items()},
        used_memory=int(memory.get("used_memory", 0)),
        max_memory=int(memory.get("maxmemory", 0)),
        api_processes=processes,
    )


async def _read_in_pipeline(redis: Redis, layout: QueueLayout, partitions: list[QueueKeys], args, now_ms):
    script = load("stats")
    for first in (True, False):  # a Redis without the functions: load them, then again
        if not first:
            await redis.execute_command(*library().load_command())
        async with redis.pipeline(transaction=False) as pipe:
            for keys in partitions:
                pipe.execute_command(*script.fcall(keys.all, args))
            for keys in partitions:
                pipe.xlen(keys.dead_events)
            pipe.info("memory")
            _seen_range(pipe, layout, now_ms)
            replies = await pipe.execute(raise_on_error=False)
        if not any(is_not_loaded(reply) for reply in replies):
            break
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    n = len(partitions)
    return replies[:n], replies[n : 2 * n], replies[-2], replies[-1]


async def _read_on_cluster(redis: RedisCluster, layout: QueueLayout, partitions: list[QueueKeys], args, now_ms):
    script = load("stats")

    async def stats(keys: QueueKeys) -> list[Any]:
        command = script.fcall(keys.all, args)
        await redis.initialize()  # the slot map routed() reads
        try:
            return await redis.execute_command(*command, **routed(redis, command))
        except ResponseError as exc:
            if not is_not_loaded(exc):
                raise
        load = library().load_command()
        await redis.execute_command(*load, **routed(redis, load))
        return await redis.execute_command(*command, **routed(redis, command))

    async def memory() -> dict[str, Any]:
        per_node = await redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
        infos = per_node.values() if all(isinstance(v, dict) for v in per_node.values()) else [per_node]
        return {
            "used_memory": sum(int(info.get("used_memory", 0)) for info in infos),
            "maxmemory": sum(int(info.get("maxmemory", 0)) for info in infos),
        }

    seen_key = api_seen_key(layout.prefix)
    replies, dead, info, seen = await asyncio.gather(
        asyncio.gather(*(stats(keys) for keys in partitions)),
        asyncio.gather(*(redis.xlen(keys.dead_events) for keys in partitions)),
        memory(),
        redis.zrangebyscore(seen_key, now_ms - API_SEEN_SECONDS * 1000, "+inf", withscores=True),
    )
    return replies, dead, info, seen


def _seen_range(pipe: Any, layout: QueueLayout, now_ms: float) -> None:
    pipe.zrangebyscore(api_seen_key(layout.prefix), now_ms - API_SEEN_SECONDS * 1000, "+inf", withscores=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the API processes' heartbeat ---------------------------------------------------------------


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def say_alive(redis: Redis | RedisCluster, prefix: str, name: str) -> None:
    """This API process was alive just now; processes silent for an hour are forgotten."""
    now_ms = time.time() * 1000
    key = api_seen_key(prefix)
    if isinstance(redis, RedisCluster):
        await redis.zadd(key, {name: now_ms})
        await redis.zremrangebyscore(key, "-inf", now_ms - API_SEEN_FORGET_SECONDS * 1000)
        return
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {name: now_ms})
        pipe.zremrangebyscore(key, "-inf", now_ms - API_SEEN_FORGET_SECONDS * 1000)
        await pipe.execute()


__all__ = ["RATE_BUCKET_SECONDS", "GroupStats", "QueueStats", "RedisSnapshot", "read_snapshot", "say_alive"]
