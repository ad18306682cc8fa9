"""The HTTP API under load: push tasks/s and pop pops/s with p50/p99 at 1, 10 and 50
concurrent clients, against one and two API processes (``redisched api [--workers 2]``),
100,000 tasks queued (topped up before every pop run), the runners' filter, limit=1. And
the ceiling: the same uvicorn setup serving a constant pop-sized JSON body
(benchmarks/constapp.py), run alternately with the real pop so both see the same machine.

The load generator is ``wrk`` (one thread) when installed, else benchmarks/loader.py
(httpx + asyncio, one process; costlier per request, so its numbers are lower). Either way
it shares the 2 cores with the API processes and Redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import RUNNER_FILTER, Context, fill_boefje, median, poppable_numbers, progress
from benchmarks.servers import PIDS, api_server, ceiling_server, postgres_available, private_database, private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout

DEPTH = 100_000
CONCURRENCY = (1, 10, 50)
PUSH_TEMPLATE = (
    '{"organisation":"org3","priority":7,"data":{"boefje":{"id":"boefje-03","name":"boefje-03",'
    '"version":null,"oci_image":"ghcr.io/minvws/openkat/plugin-3:latest"},'
    '"input_ooi":"Hostname|internet|w@N@.example.com","organization":"org3"}}'
)

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local template = [==[%(template)s]==]
local run = "%(run)s"
local counter = 0
if template ~= "" then
  request = function()
    counter = counter + 1
    local body = string.gsub(template, "@N@", run .. "-" .. counter)
    return wrk.format(nil, nil, nil, body)
  end
else
  wrk.body = [==[%(body)s]==]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\n{"requests":%%d,"duration_us":%%d,"non2xx":%%d,"errors":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class Loader:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.wrk = shutil.which("wrk")
        self.dir = Path(tempfile.mkdtemp(prefix="redisched-bench-http-"))

    @property
    def name(self) -> str:
        return "wrk (1 thread)" if self.wrk else "benchmarks/loader.py (httpx, asyncio)"

    def run(self, url: str, connections: int, *, body: str = "", template: str = "") -> dict[str, Any]:
        if self.wrk:
            script = self.dir / f"{uuid.uuid4().hex}.lua"
            script.write_text(WRK_SCRIPT % {"template": template, "body": body, "run": uuid.uuid4().hex[:8]})
            args = [self.wrk, "-t1", f"-c{connections}", f"-d{self.seconds}s", "--timeout", "10s", "-s", str(script), url]
            done = subprocess.run(args, capture_output=True, text=True, timeout=self.seconds + 60)
            script.unlink()
            line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
            result = json.loads(line)
            result["duration_s"] = result.pop("duration_us") / 1e6
        else:
            path = self.dir / f"{uuid.uuid4().hex}.json"
            path.write_text(template or body)
            args = [sys.executable, "-m", "benchmarks.loader", "--url", url, "--connections", str(connections),
                    "--seconds", str(self.seconds), "--push-template" if template else "--body-file", str(path)]
            done = subprocess.run(args, capture_output=True, text=True, timeout=self.seconds + 60)
            path.unlink()
            if done.returncode != 0:
                raise RuntimeError(f"loader failed: {done.stderr[-800:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
        result["rps"] = result["requests"] / result["duration_s"] if result["duration_s"] else 0.0
        return result


def run(ctx: Context) -> None:
    seconds = 3 if ctx.quick else 8
    repeats = 1 if ctx.quick else 2
    loader = Loader(seconds)
    ctx.note(f"load generator: {loader.name}, on the same 2 cores as the API processes and Redis: "
             "all HTTP numbers are lower than on a machine with a separate load generator")
    if not loader.wrk:
        ctx.note("wrk not installed (apt-get install wrk): the Python loader costs more CPU per request than wrk")
    pg_missing = postgres_available()
    filter_body = json.dumps(RUNNER_FILTER)
    with private_redis() as url, _database(pg_missing) as dsn:
        if pg_missing:
            ctx.note(f"Postgres not reachable ({pg_missing}); the API runs with an unreachable DSN (push/pop do not use it)")
        raw = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="rs"))
        fill_boefje(raw, commands, DEPTH, numbers=poppable_numbers(DEPTH), label="http: ")
        state = {"block": DEPTH}

        def top_up() -> None:
            missing = DEPTH - raw.zcard(commands.keys("boefje").queue)
            if missing > 0:
                block = state["block"] + 1
                fill_boefje(raw, commands, missing, numbers=poppable_numbers(missing, block))
                state["block"] = block + missing
            raw.delete(commands.keys("boefje").events)  # no snapshotter here: keep memory flat

        results: dict[str, Any] = {}
        for procs in (1, 2):
            with api_server(url, dsn, workers=procs) as api_port, ceiling_server(workers=procs) as ceil_port:
                pop_url = f"http://127.0.0.1:{api_port}/schedulers/boefje/pop?limit=1"
                push_url = f"http://127.0.0.1:{api_port}/schedulers/boefje/push"
                ceil_url = f"http://127.0.0.1:{ceil_port}/schedulers/boefje/pop?limit=1"
                for c in CONCURRENCY:
                    key = f"{procs}p_c{c}"
                    push = loader.run(push_url, c, template=PUSH_TEMPLATE)
                    pops, ceilings = [], []
                    for rep in range(3 if (procs, c) == (1, 50) else repeats):
                        top_up()
                        before = raw.zcard(commands.keys("boefje").queue)
                        spy = _start_pyspy(PIDS.get(api_port), seconds) if (procs, c, rep) == (1, 50, 0) else None
                        pop = loader.run(pop_url, c, body=filter_body)
                        if spy is not None:
                            _report_pyspy(ctx, *spy)
                        pop["popped"] = before - raw.zcard(commands.keys("boefje").queue)
                        pops.append(pop)
                        ceilings.append(loader.run(ceil_url, c, body=filter_body))
                    results[key] = {"push": push, "pop": pops, "ceiling": ceilings}
                    progress(f"http: {procs} process(es), {c} concurrent: push {push['rps']:,.0f}/s, "
                             f"pop {median([p['rps'] for p in pops]):,.0f}/s, ceiling {median([x['rps'] for x in ceilings]):,.0f}/s")
        ctx.detail("runs", results)
        access_log = _access_log_cost(loader, url, dsn, pop_url_body=filter_body, top_up=top_up, rounds=3 if ctx.quick else 5)
        ctx.detail("access_log", access_log)

    for procs in (1, 2):
        for c in CONCURRENCY:
            r = results[f"{procs}p_c{c}"]
            key = (procs, c) == (1, 50)
            label = f"{procs} proc, {c:>2} conc"
            push, pops, ceilings = r["push"], r["pop"], r["ceiling"]
            bad = push["non2xx"] + push["errors"]
            ctx.row(f"push {label}", push["rps"], "tasks/s", ">= 4000" if key else "",
                    note=f"{bad} non-2xx/errors" if bad else "")
            pop_rps = median([p["rps"] for p in pops])
            ctx.row(f"pop {label}", pop_rps, "pops/s", ">= 4000" if key else "")
            ctx.row(f"pop {label} p50", median([p["p50_us"] for p in pops]) / 1000, "ms")
            ctx.row(f"pop {label} p99", median([p["p99_us"] for p in pops]) / 1000, "ms", "< 25" if key else "")
            ceiling = median([x["rps"] for x in ceilings])
            ctx.row(f"ceiling (constant body) {label}", ceiling, "req/s")
            ratios = [p["rps"] / x["rps"] for p, x in zip(pops, ceilings)]
            ctx.row(f"pop / ceiling {label}", 100 * median(ratios), "%", ">= 60" if key else "")
            empty = sum(p["requests"] - p["popped"] for p in pops)
            errors = sum(p["non2xx"] + p["errors"] for p in pops)
            if empty > 0 or errors:
                ctx.note(f"{label}: {empty} pops answered without a task, {errors} non-2xx/errors")


    on, off = access_log["on"], access_log["off"]
    label = "pop 1 proc, 50 conc"
    ctx.row(f"{label}, access log on", median([r["rps"] for r in on]), "pops/s")
    ctx.row(f"{label}, access log off", median([r["rps"] for r in off]), "pops/s")
    ctx.row("access log: API CPU per pop, on", median([r["cpu_us"] for r in on]), "us")
    ctx.row("access log: API CPU per pop, off", median([r["cpu_us"] for r in off]), "us")
    ctx.row("access log: pops/s on / off (paired rounds)", 100 * median([a["rps"] / b["rps"] for a, b in zip(on, off)]), "%")


def _access_log_cost(loader: Loader, url: str, dsn: str, *, pop_url_body: str, top_up, rounds: int) -> dict[str, list]:
    """Two API processes side by side, the access log on in one (written to a file, as a
    service manager would), off in the other; the same pop run on each in turn, ``rounds``
    times. CPU per pop (the API process' user + system time over the pops it answered) moves
    less with the machine's other load than pops/s."""
    import psutil

    runs: dict[str, list] = {"on": [], "off": []}
    with api_server(url, dsn, access_log=True) as on_port, api_server(url, dsn, access_log=False) as off_port:
        for _ in range(rounds):
            for mode, port in (("on", on_port), ("off", off_port)):
                top_up()
                proc = psutil.Process(PIDS[port])
                before = sum(proc.cpu_times()[:2])
                pop = loader.run(f"http://127.0.0.1:{port}/schedulers/boefje/pop?limit=1", 50, body=pop_url_body)
                pop["cpu_us"] = 1e6 * (sum(proc.cpu_times()[:2]) - before) / max(1, pop["requests"])
                runs[mode].append(pop)
    progress(f"http: access log on {median([r['rps'] for r in runs['on']]):,.0f} pops/s, "
             f"off {median([r['rps'] for r in runs['off']]):,.0f} pops/s")
    return runs


def _database(pg_missing: str | None):
    import contextlib

    if pg_missing:
        return contextlib.nullcontext("postgresql://redisched@127.0.0.1:1/unreachable")
    return private_database()


# --- where the API process spends its CPU during the pop run (py-spy, when installed) -------

PYSPY_GROUPS = {
    "redis-py (asyncio client: pack, send, parse)": "(redis/",
    "starlette (routing, request, response)": "(starlette/",
    "uvicorn (protocol, transport)": "(uvicorn/",
    "redisched code": "(redisched/",
    "httptools (C parser)": "(httptools/",
    "asyncio event loop": "(asyncio/",
}


def _start_pyspy(pid: int | None, seconds: float):
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if pid is None or not Path(pyspy).exists():
        return None
    out = Path(tempfile.mkstemp(prefix="redisched-bench-pyspy-", suffix=".txt")[1])
    args = [pyspy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds) - 1)), "--rate", "250",
            "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def _report_pyspy(ctx: Context, proc: subprocess.Popen, out: Path) -> None:
    try:
        proc.wait(timeout=60)
        stacks = [line.rsplit(" ", 1) for line in out.read_text().splitlines() if line.strip()]
    except Exception as exc:  # noqa: BLE001 - the profile is a bonus
        ctx.note(f"py-spy failed: {exc!r}")
        return
    finally:
        out.unlink(missing_ok=True)
    total = sum(int(n) for _, n in stacks)
    if not total:
        ctx.note("py-spy: no samples")
        return
    groups = {name: 0 for name in PYSPY_GROUPS} | {"other": 0}
    inclusive = {name: 0 for name in PYSPY_GROUPS}
    leaves: dict[str, int] = {}
    for stack, n in stacks:
        leaf = stack.split(";")[-1]
        leaves[leaf] = leaves.get(leaf, 0) + int(n)
        owner = next((name for name, marker in PYSPY_GROUPS.items() if marker in leaf), "other")
        groups[owner] += int(n)  # own time: the package of the innermost frame
        for name, marker in PYSPY_GROUPS.items():
            if marker in stack:
                inclusive[name] += int(n)
    ctx.detail("pyspy_api_pop_1p_c50", {"samples": total, "own_pct": {k: round(100 * v / total, 1) for k, v in groups.items()},
                                        "inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.items()},
                                        "top_self": [(k, round(100 * v / total, 1)) for k, v in sorted(leaves.items(), key=lambda kv: -kv[1])[:15]]})
    ctx.note("API process CPU during pop, 1 proc, 50 conc (py-spy, own time by package of the innermost frame): "
             + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in groups.items()))
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:5]
    ctx.note("API process, top functions by own time: " + "; ".join(f"{k} {100 * v / total:.0f}%" for k, v in top))
