"""Where the direct client's pop and push time goes: Python (building the call, parsing the
reply), the round trip, and inside Redis the script (EVALSHA usec_per_call from INFO
commandstats) split into the Redis commands it ran and the Lua around them. Plus a cProfile
of each path (top functions by own time, in the JSON details).

Pop: boefje queue, 100,000 queued (10,000 with --quick), the runners' filter, limit=1.
Push: boefje task through ``Client.queue("boefje").push``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import random
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.common import RUNNER_FILTER, poppable_numbers, Context, boefje_data, fill_boefje, median, progress
from benchmarks.servers import private_redis
from redisched import filters
from redisched.client import Client
from redisched.models import parse_payload
from redisched.queue.commands import QueueCommands, _parse_push
from redisched.queue.layout import QueueLayout


def _p50_us(fn: Callable[[], Any], n: int) -> float:
    samples = []
    gc.collect()
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    return median(samples) / 1000


def _redis_side(raw: redis.Redis, fn: Callable[[], Any], n: int, via: str = "fcall") -> dict[str, Any]:
    """Run fn n times between CONFIG RESETSTAT and INFO commandstats: per-call µs of the script
    (FCALL, or ``via``) and of each command the script ran."""
    raw.config_resetstat()
    for _ in range(n):
        fn()
    stats = raw.info("commandstats")
    script = stats.get(f"cmdstat_{via}", {"usec": 0, "calls": 1})
    inner = {k.removeprefix("cmdstat_"): v for k, v in stats.items()
             if k not in (f"cmdstat_{via}", "cmdstat_config", "cmdstat_info")}
    inner_us = sum(v["usec"] for v in inner.values()) / n
    return {
        "script_us": script["usec"] / max(1, script["calls"]),
        "commands_us": inner_us,
        "commands": {k: {"calls_per_op": v["calls"] / n, "us_per_op": v["usec"] / n} for k, v in
                     sorted(inner.items(), key=lambda kv: -kv[1]["usec"])},
    }


def _cprofile(fn: Callable[[], Any], n: int, top: int = 15) -> list[str]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return [line for line in out.getvalue().splitlines() if line.strip()][-top - 1:]


def _async_rate(url: str, n: int, script: tuple[Any, list[str]] | None) -> float:
    """Calls/s of 10 concurrent asyncio callers on one redis.asyncio client: what the API
    process and AsyncClient can issue per second, whatever Redis does."""
    import asyncio

    import redis.asyncio as aredis
    import uvloop

    async def main() -> float:
        client = aredis.Redis.from_url(url)
        left = n

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if script is None:
                    await client.ping()
                else:
                    call, keys = script
                    await client.execute_command(*call.script.fcall(keys, call.args))

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(10)))
        rate = n / (time.perf_counter() - t0)
        await client.aclose()
        return rate

    return uvloop.run(main())


def run(ctx: Context) -> None:
    depth = ctx.scale(100_000, 20_000)
    n = ctx.scale(5_000, 2_000)
    with private_redis() as url:
        raw = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="prof"))
        fill_boefje(raw, commands, depth, label="profile: ", numbers=poppable_numbers(depth))  # all poppable
        client = Client(redis.Redis.from_url(url), commands.layout)
        queue = client.queue("boefje")
        client.load_functions()
        keys = commands.keys("boefje").all

        ping = _p50_us(raw.ping, n)
        ctx.row("round trip floor: PING p50 (redis-py + hiredis)", ping, "µs")
        ctx.row("asyncio redis-py: PING/s, 10 concurrent, one process", _async_rate(url, n, None), "calls/s")

        # --- pop --------------------------------------------------------------------------------
        node = filters.parse_filter_request(RUNNER_FILTER)
        call = commands.pop("boefje", filters_node=node, limit=1)
        pop_total = _p50_us(lambda: queue.pop(filters=RUNNER_FILTER, limit=1), n)
        parse_filter = _p50_us(lambda: filters.parse_filter_request(RUNNER_FILTER), n)
        build = _p50_us(lambda: commands.pop("boefje", filters_node=node, limit=1), n)
        replies = []
        round_trip = _p50_us(lambda: replies.append(raw.execute_command(*call.script.fcall(keys, call.args))), n)
        reply = next(r for r in replies if r)
        parse = _p50_us(lambda: call.parse(reply), n)
        side = _redis_side(raw, lambda: raw.execute_command(*call.script.fcall(keys, call.args)), n)
        ctx.detail("pop_redis_commands", side["commands"])
        _report(ctx, "pop", pop_total, {"parse filter request": parse_filter, "build script call (plan, to_lua, token)": build,
                                        "parse reply (msgspec)": parse}, round_trip, side, ping)
        ctx.detail("pop_cprofile", _cprofile(lambda: queue.pop(filters=RUNNER_FILTER, limit=1), n))

        # What the script time is made of: a script that does nothing with the same 12 keys,
        # and the same pop without a filter (driven by the queue itself, nothing to evaluate).
        noop = raw.script_load("return 1")
        empty = _redis_side(raw, lambda: raw.evalsha(noop, len(keys), *keys, *call.args), n, via="evalsha")
        ctx.row("Redis: EVALSHA of `return 1` with the same KEYS/ARGV", empty["script_us"], "µs")
        plain = commands.pop("boefje", filters_node=None, limit=1)
        unfiltered = _redis_side(raw, lambda: raw.execute_command(*plain.script.fcall(keys, plain.args)), n)
        ctx.row("pop: Redis: script time without a filter (queue-driven)", unfiltered["script_us"], "µs")
        ctx.row("pop: Redis: script time with the runner filter, 8 ranges", side["script_us"], "µs")
        ctx.row("asyncio redis-py: pops/s (EVALSHA, ARGV prebuilt), 10 concurrent", _async_rate(url, n, (call, keys)), "pops/s")

        # --- push -------------------------------------------------------------------------------
        rng = random.Random(5)
        payloads = iter([boefje_data(50_000_000 + i, rng=rng) for i in range(6 * n + 10)])

        def push() -> None:
            data, org, priority = next(payloads)
            queue.push(organisation=org, data=data, priority=priority)

        def build_push() -> Any:
            data, org, priority = next(payloads)
            return commands.push("boefje", organisation=org, data=data, priority=priority)

        push_total = _p50_us(push, n)
        sample = boefje_data(1, rng=rng)[0]
        sample["id"] = "2f1d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
        validate = _p50_us(lambda: parse_payload("boefje", sample), n)
        build = _p50_us(build_push, n)
        calls = [build_push() for _ in range(n)]
        it = iter(calls)
        push_replies = []
        round_trip = _p50_us(lambda: push_replies.append(raw.execute_command(*(c := next(it)).script.fcall(keys, c.args))), n)
        parse = _p50_us(lambda: _parse_push(push_replies[0]), n)
        calls = [build_push() for _ in range(n)]
        it = iter(calls)
        side = _redis_side(raw, lambda: raw.execute_command(*(c := next(it)).script.fcall(keys, c.args)), n)
        ctx.detail("push_redis_commands", side["commands"])
        _report(ctx, "push", push_total, {"build script call (whole)": build, "  of which payload validation (msgspec.convert)": validate,
                                          "parse reply (msgspec)": parse}, round_trip, side, ping)
        ctx.detail("push_cprofile", _cprofile(push, n))
        if queue.qsize() < depth - 6 * n:
            ctx.note("the queue ran low during the pop measurements: treat the pop rows with care")
        progress("profile: cProfile top functions are in the JSON details (pop_cprofile, push_cprofile)")


def _report(ctx: Context, op: str, total: float, python: dict[str, float], round_trip: float,
            side: dict[str, Any], ping: float) -> None:
    ctx.row(f"{op}: client call p50 (total)", total, "µs")
    for what, us in python.items():
        ctx.row(f"{op}: Python: {what}", us, "µs")
    ctx.row(f"{op}: EVALSHA round trip, ARGV prebuilt", round_trip, "µs")
    ctx.row(f"{op}: Redis: script time (commandstats)", side["script_us"], "µs")
    ctx.row(f"{op}: Redis: commands inside the script", side["commands_us"], "µs")
    ctx.row(f"{op}: Redis: Lua around them (cjson, logic)", side["script_us"] - side["commands_us"], "µs")
    top = list(side["commands"].items())[:4]
    ctx.note(f"{op}: commands per call: " + ", ".join(f"{k} x{v['calls_per_op']:.1f} = {v['us_per_op']:.1f} µs" for k, v in top))
    ctx.note(f"{op}: of {total:.0f} µs, ~{side['script_us']:.0f} µs is the script in Redis, "
             f"~{max(0.0, round_trip - side['script_us']):.0f} µs the round trip outside it (PING floor {ping:.0f} µs), "
             f"~{max(0.0, total - round_trip):.0f} µs Python around the call")
