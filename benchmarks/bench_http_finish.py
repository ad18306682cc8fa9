"""Finish and fetch over HTTP: finished tasks/s of 10 runners in one process (httpx, asyncio),
each completing its task with its lease token and getting the next one with the runners'
filter, either as two calls (``PATCH /tasks/{id}``, then ``POST /schedulers/boefje/pop``) or
as one (``PATCH /tasks/{id}/pop_next``), alternating round by round against one API process
(60,000 queued). The runners' Python client is the bound here, so the ratio is the figure.

Beside them, a runner's whole loop as OpenKAT's runners make it (pop, ``PATCH`` running,
``PATCH`` completed: three requests per task) against a worker that has its tasks popped
running (``?status=running``) and finishes and fetches in one request per task.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import redis

from benchmarks.common import RUNNER_FILTER, Context, fill_boefje, median, poppable_numbers, progress
from benchmarks.servers import api_server, private_database, private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout

RUNNERS = 10
DEPTH = 60_000
MODES = ("PATCH, then pop", "PATCH .../pop_next", "pop, PATCH running, PATCH completed",
         "PATCH .../pop_next?status=running, popped running")


def run(ctx: Context) -> None:
    seconds, rounds = (3, 4) if ctx.quick else (6, 6)
    with private_redis() as url, private_database() as dsn:
        raw = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="rs"))
        fill_boefje(raw, commands, DEPTH, numbers=poppable_numbers(DEPTH), label="http_finish: ")
        with api_server(url, dsn) as port:
            rates: dict[str, list[float]] = {mode: [] for mode in MODES}
            for r in range(rounds):
                for mode in MODES if r % 2 == 0 else reversed(MODES):
                    rates[mode].append(asyncio.run(_finished_per_second(f"http://127.0.0.1:{port}", mode, seconds)))
                    raw.delete(commands.keys("boefje").events)  # no snapshotter here
                progress(f"http_finish: round {r + 1}/{rounds}: " + ", ".join(f"{m} {v[-1]:,.0f}/s" for m, v in rates.items()))
    ctx.detail("finished_per_second", rates)
    for mode, values in rates.items():
        ctx.row(f"finished tasks/s, {RUNNERS} runners, {mode}", median(values), "tasks/s")
    two, one, runner, worker = (rates[mode] for mode in MODES)
    ctx.row("pop_next / PATCH then pop (per round, median)", median([b / a for a, b in zip(two, one)]), "x")
    ctx.row("popped running + pop_next / OpenKAT's loop (per round, median)",
            median([b / a for a, b in zip(runner, worker)]), "x")


async def _finished_per_second(base: str, mode: str, seconds: float) -> float:
    finished = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        popped_running = mode == MODES[3]
        pop_params = {"limit": 1, "status": "running"} if popped_running else {"limit": 1}

        async def patched(task_id: str, status: str, lease: dict[str, str]) -> None:
            (await http.patch(f"/tasks/{task_id}", json={"status": status}, headers=lease)).raise_for_status()

        async def runner() -> None:
            nonlocal finished
            answer = await http.post("/schedulers/boefje/pop", params=pop_params, json=RUNNER_FILTER)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                [task], token = answer.json()["results"], answer.headers["x-lease-token"]
                lease = {"x-lease-token": token}
                if mode in (MODES[0], MODES[2]):
                    if mode == MODES[2]:
                        await patched(task["id"], "running", lease)
                    await patched(task["id"], "completed", lease)
                    answer = await http.post("/schedulers/boefje/pop", params=pop_params, json=RUNNER_FILTER)
                else:
                    body = {"status": "completed", **RUNNER_FILTER}
                    answer = await http.patch(f"/tasks/{task['id']}/pop_next", params=pop_params, json=body,
                                              headers=lease)
                answer.raise_for_status()
                finished += 1

        await asyncio.gather(*(runner() for _ in range(RUNNERS)))
    return finished / seconds
