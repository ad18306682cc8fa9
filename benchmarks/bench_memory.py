"""Redis memory per queued boefje task: ``INFO memory`` used_memory after N pushes minus
before, divided by N, once with the events stream as the pushes left it and once with it
deleted (what remains when the snapshotter has trimmed it: the steady state). Plus
``MEMORY USAGE`` (all samples) of every key of the queue, per task.
"""

from __future__ import annotations

import redis

from benchmarks.common import Context, fill_boefje
from benchmarks.servers import private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.keys import KEY_NAMES


def run(ctx: Context) -> None:
    n = ctx.scale(100_000, 20_000)
    with private_redis() as url:
        raw = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="mem"))
        before = raw.info("memory")["used_memory"]
        fill_boefje(raw, commands, n, drop_events=False, label="memory: ")
        with_events = raw.info("memory")["used_memory"]
        keys = commands.keys("boefje")
        usage = {name: raw.memory_usage(keys.key(name), samples=0) or 0 for name in KEY_NAMES}
        raw.delete(keys.events)
        without = raw.info("memory")["used_memory"]
        ctx.detail("used_memory", {"before": before, "with_events": with_events, "without_events": without, "n": n})
        ctx.detail("memory_usage_bytes", usage)
        ctx.row(f"used_memory per queued task ({n:,}, events stream trimmed)", (without - before) / n, "bytes", "<= 1536")
        ctx.row("used_memory per queued task, events stream untrimmed", (with_events - before) / n, "bytes")
        for name, size in sorted(usage.items(), key=lambda kv: -kv[1]):
            if size:
                ctx.row(f"MEMORY USAGE {name} per task", size / n, "bytes")
        sample = raw.hget(keys.tasks, raw.hkeys(keys.tasks)[0]) if n else b""
        ctx.row("task record JSON length (one task)", len(sample), "bytes")
        ctx.detail("sample_record", sample.decode())
