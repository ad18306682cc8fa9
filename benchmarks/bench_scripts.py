"""Each queue script's Redis time per op, from INFO commandstats on a private server.

The calls are built first (``QueueCommands``) and run one at a time through the direct
client's driver (whatever it sends: EVALSHA or FCALL), between CONFIG RESETSTAT and INFO
commandstats, so the figure is Redis' own time for the script (usec_per_call of the script
command) and the commands it ran inside, with nothing of Python or the round trip in it.

Boefje queue at 100,000 queued (20,000 with --quick), all poppable by the runners' filter.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.common import MISMATCHED_FILTER, RUNNER_FILTER, Context, boefje_data, fill_boefje, poppable_numbers
from benchmarks.servers import private_redis
from redisched import filters
from redisched.client import Client
from redisched.queue.calls import ScriptCall
from redisched.queue.commands import PUSHES_PER_RUN, QueueCommands
from redisched.queue.layout import QueueLayout

SCRIPT_COMMANDS = ("cmdstat_fcall", "cmdstat_fcall_ro", "cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro")
# Per op, what DESIGN.md / issue 15 aim at (Redis µs per op); "" = no goal.
GOALS = {"pop, runner filter (8 boefjes)": "<= 40", "push": "<= 25"}


def script_stats(raw: redis.Redis, run: Callable[[], Any], n: int) -> dict[str, Any]:
    """Run ``run`` n times, the last n - 1 between CONFIG RESETSTAT and INFO commandstats (the
    first loads the script): the script command's µs per call, and per op the calls and µs of
    each command the scripts ran."""
    run()
    n -= 1
    raw.config_resetstat()
    cpu_before = _main_thread_cpu_us(raw)
    for _ in range(n):
        run()
    cpu_us = _main_thread_cpu_us(raw) - cpu_before
    stats = raw.info("commandstats")
    scripts = {k: v for k, v in stats.items() if k in SCRIPT_COMMANDS and v["calls"]}
    calls = sum(v["calls"] for v in scripts.values())
    usec = sum(v["usec"] for v in scripts.values())
    inner = {k.removeprefix("cmdstat_"): v for k, v in stats.items()
             if k not in SCRIPT_COMMANDS and k not in ("cmdstat_config", "cmdstat_info")}
    return {
        "via": "+".join(k.removeprefix("cmdstat_").upper() for k in scripts) or "-",
        "script_calls_per_op": calls / n,
        "us_per_op": usec / n,
        "cpu_us_per_op": cpu_us / n,
        "commands_per_op": sum(v["calls"] for v in inner.values()) / n,
        "commands_us_per_op": sum(v["usec"] for v in inner.values()) / n,
        "commands": {k: {"calls_per_op": round(v["calls"] / n, 2), "us_per_op": round(v["usec"] / n, 2)}
                     for k, v in sorted(inner.items(), key=lambda kv: -kv[1]["usec"])},
    }


def _main_thread_cpu_us(raw: redis.Redis) -> float:
    """CPU time Redis' main thread has used (user + system), in µs: unlike commandstats' usec,
    a wall-clock figure, it does not grow while a loaded machine runs other processes on that
    core. It holds the round trip's protocol and socket work too, so it exceeds usec on a quiet
    machine."""
    cpu = raw.info("cpu")
    return (cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]) * 1e6


def _each(client: Client, calls: list[ScriptCall[Any]], replies: list[Any] | None = None) -> Callable[[], None]:
    it = iter(calls)

    def run() -> None:
        [reply] = client.driver.send([next(it)])
        if replies is not None:
            replies.append(reply)

    return run


def run(ctx: Context) -> None:
    depth = ctx.scale(100_000, 20_000)
    n = ctx.scale(2_000, 1_000)
    with private_redis() as url:
        raw = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="sc"))
        fill_boefje(raw, commands, depth, label="scripts: ", numbers=poppable_numbers(depth))
        client = Client(redis.Redis.from_url(url), commands.layout)
        queue = client.queue("boefje")
        runner = filters.parse_filter_request(RUNNER_FILTER)
        results: dict[str, dict[str, Any]] = {}

        def measure(label: str, run_one: Callable[[], Any], count: int = n) -> None:
            results[label] = stats = script_stats(raw, run_one, count)
            ctx.row(f"{label}: Redis µs per op ({stats['via']})", stats["us_per_op"], "µs", GOALS.get(label, ""))
            ctx.row(f"{label}: Redis main-thread CPU µs per op", stats["cpu_us_per_op"], "µs")
            ctx.row(f"{label}: Redis commands per op", stats["commands_per_op"], "calls")

        for _ in range(200):  # warm-up: script cache, allocator
            queue.pop(filters=RUNNER_FILTER, limit=1)

        rng = random.Random(3)
        pushes = [commands.push("boefje", organisation=org, data=data, priority=priority)
                  for data, org, priority in (boefje_data(i, rng=rng) for i in poppable_numbers(n, 10_000_000))]
        measure("push", _each(client, pushes))
        _push_runs(ctx, raw, client, results, n)
        measure("pop, no filter", _each(client, [commands.pop("boefje", limit=1) for _ in range(n)]))
        popped: list[Any] = []
        measure("pop, runner filter (8 boefjes)",
                _each(client, [commands.pop("boefje", filters_node=runner, limit=1) for _ in range(n)], popped))
        tasks = [task for reply in popped for task in reply]
        measure("peek, runner filter, limit 10",
                _each(client, [commands.peek("boefje", filters_node=runner, limit=10) for _ in range(n // 4)]), n // 4)
        measure("extend lease", _each(client, [commands.extend_lease("boefje", t.id, t.lease, 600) for t in tasks]),
                len(tasks))
        measure("patch to running", _each(client, [commands.patch("boefje", t.id, {"status": "running"}, token=t.lease)
                                                   for t in tasks]), len(tasks))
        half = len(tasks) // 2
        measure("patch to completed", _each(client, [commands.patch("boefje", t.id, {"status": "completed"},
                                                                    token=t.lease) for t in tasks[:half]]), half)
        measure("pop_next: completed + next pop, runner filter", _each(client, [
            commands.pop_next("boefje", t.id, {"status": "completed"}, token=t.lease, filters_node=runner)
            for t in tasks[half:]]), len(tasks) - half)
        measure("reap (nothing expired)", _each(client, [commands.reap("boefje") for _ in range(n // 4)]), n // 4)
        _mismatched(ctx, raw, url, measure)
        ctx.detail("scripts", results)
        ctx.note("Redis µs per op = usec of the script command (EVALSHA/FCALL) / ops, from INFO commandstats on a "
                 "private redis-server; the commands run inside a script are counted in it")


def _push_runs(ctx: Context, raw: redis.Redis, client: Client, results: dict[str, dict[str, Any]], n: int) -> None:
    """Pushes as push_many sends them: runs of PUSHES_PER_RUN in one script call; per push."""
    rng, per_run = random.Random(4), PUSHES_PER_RUN
    tasks = [{"organisation": org, "data": data, "priority": priority}
             for data, org, priority in (boefje_data(i, rng=rng) for i in poppable_numbers(n * 4, 20_000_000))]
    runs = iter(range(0, len(tasks), per_run))

    def run() -> None:
        at = next(runs)
        client.push_many("boefje", tasks[at:at + per_run])

    count = len(tasks) // per_run
    stats = script_stats(raw, run, count)
    per_push = {key: stats[key] / per_run for key in ("us_per_op", "cpu_us_per_op", "commands_per_op")}
    results["push, runs of 256 (push_many)"] = {**stats, "per_push": per_push}
    label = f"push in runs of {per_run} (push_many), per push"
    ctx.row(f"{label}: Redis µs per op ({stats['via']})", per_push["us_per_op"], "µs", GOALS["push"])
    ctx.row(f"{label}: Redis main-thread CPU µs per op", per_push["cpu_us_per_op"], "µs")
    ctx.row(f"{label}: Redis commands per op", per_push["commands_per_op"], "calls")


def _mismatched(ctx: Context, raw: redis.Redis, url: str, measure: Callable[..., None]) -> None:
    """A runner whose plugin list names 2 boefjes whose image it lacks, 1,000 of their tasks
    queued, about 700 of them ahead of the poppable ones it takes. Flat = the same cost as
    the plain runner pop."""
    commands = QueueCommands(QueueLayout(prefix="scm"))
    fill_boefje(raw, commands, 1_000, numbers=(b * 20 + 2 + (b % 2) for b in range(1_000)))  # boefje-02/03, images 2/3
    fill_boefje(raw, commands, 1_500, start=1_000_000, numbers=poppable_numbers(1_500, 50_000))
    client = Client(redis.Redis.from_url(url), commands.layout)
    runner = filters.parse_filter_request(RUNNER_FILTER)
    for _ in range(1_000):  # the best poppable ones go: about 2/3 of the unpoppable are ahead now
        client.driver.send([commands.pop("boefje", filters_node=runner, limit=1)])
    node = filters.parse_filter_request(MISMATCHED_FILTER)
    measure("pop, mismatched plugin list, 1,000 unpoppable queued",
            _each(client, [commands.pop("boefje", filters_node=node, limit=1) for _ in range(300)]), 300)
