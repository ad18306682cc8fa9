"""This tree against a baseline commit, alternating within one run, on one private Redis: the
direct client's single pop with the runners' filter (100k queued), the HTTP pop (runner
filter, limit=1, 50 concurrent, one API process) beside the same uvicorn's constant route,
and the HTTP push (50 concurrent). The baseline is ``REDISCHED_BENCH_BASELINE`` (a git
revision, default ``main``), unpacked with ``git archive`` into a temporary folder; both
trees run on this checkout's virtualenv. Both must load the same Lua (one functions library
serves both): compare commits that differ in Python only.

    REDISCHED_BENCH_BASELINE=37a6627 python -m benchmarks ab --quick
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from benchmarks.bench_http import PUSH_TEMPLATE, Loader
from benchmarks.common import RUNNER_FILTER, Context, fill_boefje, median, poppable_numbers, progress
from benchmarks.servers import PIDS, ROOT, api_server, ceiling_server, postgres_available, private_database, private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout

DEPTH = 100_000
DIRECT_POPS = 300  # per round and tree

# Runs in a fresh interpreter on either tree: single pops with the runner filter, ns each.
POPPER = """
import json, sys, time, gc
import redis
from redisched.client import Client
from redisched.queue.layout import QueueLayout
url, count, filters = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
queue = Client(redis.Redis.from_url(url), QueueLayout(prefix="rs")).queue("boefje")
for _ in range(50):
    queue.pop(filters=filters, limit=1)
gc.collect()
taken = []
for _ in range(count):
    t = time.perf_counter_ns()
    got = queue.pop(filters=filters, limit=1)
    taken.append(time.perf_counter_ns() - t)
    assert len(got) == 1, got
print(json.dumps(taken))
"""


def run(ctx: Context) -> None:
    rounds = ctx.scale(9, 5)
    seconds = 3 if ctx.quick else 6
    loader = Loader(seconds)
    revision = os.environ.get("REDISCHED_BENCH_BASELINE", "main")
    pg_missing = postgres_available()
    with baseline_tree(revision) as before, private_redis() as url, _database(pg_missing) as dsn:
        commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        ctx.note(f"baseline {revision} ({commit}) against this tree; load generator {loader.name}; rounds alternate the order")
        raw = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="rs"))
        queue_key = commands.keys("boefje").queue
        fill_boefje(raw, commands, DEPTH, numbers=poppable_numbers(DEPTH), label="ab: ")
        state = {"block": DEPTH}

        def top_up() -> None:
            missing = DEPTH - raw.zcard(queue_key)
            if missing > 0:
                fill_boefje(raw, commands, missing, numbers=poppable_numbers(missing, state["block"] + 1))
                state["block"] += 1 + missing
            raw.delete(commands.keys("boefje").events)  # no snapshotter here: keep memory flat

        trees = {"before": before, "after": ROOT}
        direct: dict[str, list[list[int]]] = {name: [] for name in trees}
        for r in range(rounds):
            for name in trees if r % 2 == 0 else reversed(trees):
                top_up()
                direct[name].append(_direct_pops(trees[name], url))
        progress("ab: direct " + ", ".join(f"{n} p50 {median([_pct(s, 50) for s in v]) / 1000:.0f} µs" for n, v in direct.items()))

        http: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"pop": [], "push": []} for name in (*trees, "ceiling")}
        body = json.dumps(RUNNER_FILTER)
        with api_server(url, dsn, root=before) as before_port, api_server(url, dsn) as after_port, ceiling_server() as ceil_port:
            ports = {"before": before_port, "after": after_port, "ceiling": ceil_port}
            for r in range(rounds):
                for name in ports if r % 2 == 0 else reversed(ports):
                    top_up()
                    base = f"http://127.0.0.1:{ports[name]}/schedulers/boefje"
                    http[name]["pop"].append(_with_cpu(ports[name], lambda: loader.run(f"{base}/pop?limit=1", 50, body=body)))
                    if name != "ceiling":
                        push = lambda: loader.run(f"{base}/push", 50, template=PUSH_TEMPLATE)  # noqa: E731
                        http[name]["push"].append(_with_cpu(ports[name], push))
                progress(f"ab: http round {r + 1}/{rounds}: " + ", ".join(
                    f"{n} pop {http[n]['pop'][-1]['rps']:,.0f}/s" for n in ports))
        ctx.detail("direct_ns", direct)
        ctx.detail("http", http)

    _report(ctx, direct, http)


def _report(ctx: Context, direct: dict[str, list[list[int]]], http: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    for name, runs in direct.items():
        target50, target99 = ("< 150", "< 400") if name == "after" else ("", "")
        ctx.row(f"direct pop p50 @100k (runner filter), {name}", median([_pct(s, 50) for s in runs]) / 1000, "µs", target50)
        ctx.row(f"direct pop p99 @100k (runner filter), {name}", median([_pct(s, 99) for s in runs]) / 1000, "µs", target99)
    ratios = [_pct(a, 50) / _pct(b, 50) for a, b in zip(direct["after"], direct["before"])]
    ctx.row("direct pop p50 after / before (per round, median)", median(ratios), "x")
    ceiling = http["ceiling"]["pop"]
    for name in ("before", "after"):
        pops, pushes = http[name]["pop"], http[name]["push"]
        mine = name == "after"
        ctx.row(f"HTTP pop 50 conc, {name}", median([p["rps"] for p in pops]), "pops/s")
        ctx.row(f"HTTP pop 50 conc p99, {name}", median([p["p99_us"] for p in pops]) / 1000, "ms", "< 25" if mine else "")
        shares = [p["rps"] / c["rps"] for p, c in zip(pops, ceiling)]
        ctx.row(f"HTTP pop / ceiling (same round), {name}", 100 * median(shares), "%", ">= 60" if mine else "")
        ctx.row(f"HTTP push 50 conc, {name}", median([p["rps"] for p in pushes]), "tasks/s", ">= 4000" if mine else "")
        ctx.row(f"HTTP push 50 conc p99, {name}", median([p["p99_us"] for p in pushes]) / 1000, "ms")
        ctx.row(f"API CPU per pop, {name}", median([p["cpu_us"] for p in pops]), "µs")
        ctx.row(f"API CPU per push, {name}", median([p["cpu_us"] for p in pushes]), "µs")
        bad = sum(p["non2xx"] + p["errors"] for p in pops + pushes)
        if bad:
            ctx.note(f"ab: {name}: {bad} non-2xx answers or errors")
    ctx.row("HTTP constant route 50 conc (ceiling)", median([c["rps"] for c in ceiling]), "req/s")
    ctx.row("ceiling CPU per request", median([c["cpu_us"] for c in ceiling]), "µs")
    for kind in ("pop", "push"):
        pairs = list(zip(http["after"][kind], http["before"][kind]))
        ctx.row(f"HTTP {kind} after / before (per round, median)", median([a["rps"] / b["rps"] for a, b in pairs]), "x")
        ctx.row(f"API CPU per {kind} after / before (per round, median)", median([a["cpu_us"] / b["cpu_us"] for a, b in pairs]), "x")


def _with_cpu(port: int, load: Any) -> dict[str, Any]:
    """``load()``'s result, with the server process's CPU (user + system) per request in µs:
    it moves less with the machine's other load than the rate does."""
    import psutil

    server = psutil.Process(PIDS[port])
    before = sum(server.cpu_times()[:2])
    result = load()
    result["cpu_us"] = 1e6 * (sum(server.cpu_times()[:2]) - before) / max(1, result["requests"])
    return result


def _direct_pops(tree: Path, url: str) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, "-c", POPPER, url, str(DIRECT_POPS), json.dumps(RUNNER_FILTER)]
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"popper in {tree} failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pct(samples: list[int], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@contextlib.contextmanager
def baseline_tree(revision: str) -> Iterator[Path]:
    """The files of ``revision`` (``git archive``) in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="redisched-bench-baseline-") as folder:
        archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield Path(folder)


def _database(pg_missing: str | None):
    if pg_missing:
        return contextlib.nullcontext("postgresql://redisched@127.0.0.1:1/unreachable")
    return private_database()
