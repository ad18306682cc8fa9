"""What OpenTelemetry tracing costs: HTTP push and pop (the runners' filter, limit=1, 10
concurrent) against one ``redisched api`` with tracing off and one with it on, exporting
every span over OTLP/HTTP to a sink on 127.0.0.1 that accepts and drops them. The two run in
alternating rounds, so both see the same machine; the table has each side's median.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator

import redis

from benchmarks.bench_http import PUSH_TEMPLATE, Loader
from benchmarks.common import RUNNER_FILTER, Context, fill_boefje, median, poppable_numbers, progress
from benchmarks.servers import api_server, free_port, postgres_available, private_database, private_redis
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout

DEPTH = 30_000
CONCURRENCY = 10


@contextlib.contextmanager
def otlp_sink() -> Iterator[tuple[str, list[int]]]:
    """An OTLP/HTTP endpoint that answers every export with 200 and counts the bytes."""
    received: list[int] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(len(self.rfile.read(int(self.headers.get("content-length", 0)))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.shutdown()
        server.server_close()


def run(ctx: Context) -> None:
    seconds, rounds = (3, 2) if ctx.quick else (6, 3)
    loader = Loader(seconds)
    ctx.note(f"load generator: {loader.name}, {CONCURRENCY} concurrent, on the same cores as the API and Redis")
    pg_missing = postgres_available()
    databases = contextlib.nullcontext("postgresql://redisched@127.0.0.1:1/unreachable") if pg_missing else private_database()
    with private_redis() as url, databases as dsn, otlp_sink() as (sink, received):
        raw = redis.Redis.from_url(url)
        traced_env = {"REDISCHED_OTEL": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_BSP_SCHEDULE_DELAY": "500"}
        with api_server(url, dsn, prefix="off") as off_port, api_server(url, dsn, prefix="on", env=traced_env) as on_port:
            results: dict[str, dict[str, list[float]]] = {"off": {"push": [], "pop": []}, "on": {"push": [], "pop": []}}
            for round_ in range(rounds):
                for side, port, prefix in (("off", off_port, "off"), ("on", on_port, "on")):
                    commands = QueueCommands(QueueLayout(prefix=prefix))
                    raw.delete(commands.keys("boefje").queue)
                    fill_boefje(raw, commands, DEPTH, numbers=poppable_numbers(DEPTH, round_ * DEPTH))
                    base = f"http://127.0.0.1:{port}/schedulers/boefje"
                    push = loader.run(f"{base}/push", CONCURRENCY, template=PUSH_TEMPLATE)
                    pop = loader.run(f"{base}/pop?limit=1", CONCURRENCY, body=json.dumps(RUNNER_FILTER))
                    results[side]["push"].append(push["rps"])
                    results[side]["pop"].append(pop["rps"])
                    progress(f"otel: round {round_ + 1}, tracing {side}: push {push['rps']:,.0f}/s, pop {pop['rps']:,.0f}/s")
            ctx.detail("runs", results)
            ctx.detail("exported_bytes", sum(received))
    if not received:
        ctx.note("the traced API exported nothing: tracing was not on (is the otel extra installed?)")
    for op, unit in (("push", "tasks/s"), ("pop", "pops/s")):
        off, on = median(results["off"][op]), median(results["on"][op])
        ctx.row(f"HTTP {op}, tracing off", off, unit)
        ctx.row(f"HTTP {op}, tracing on (OTLP export)", on, unit)
        ctx.row(f"HTTP {op}, tracing on / off", 100 * on / off if off else None, "%")
