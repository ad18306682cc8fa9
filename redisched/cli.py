"""The redisched command: ``redisched [command] [options]``, ``serve`` when no command is given.

serve      API + schedulers + snapshotter + lease reaper in one process (the default setup);
           ``--workers N``: N API processes beside one worker process
api        the API only: run as many as you like, side by side (``--workers`` forks more)
worker     schedulers + snapshotter + lease reaper, no API
migrate    apply the Postgres migrations
reconcile  after Redis lost data: put live tasks and schedule mirrors back from Postgres
quarantine list | retry [ID ...]: the events Postgres refused, set aside by the snapshotter
bench      the benchmarks (``python -m benchmarks``), when this checkout has them
import-mula  move an install from mula: its schedules, history and live tasks

With no Redis or Postgres URL configured, embedded servers start under the data folder
(``REDISCHED_DATA_DIR``); migrations run on start then, or when ``DATABASE_MIGRATION=1``.
An embedded server that cannot start is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import uvicorn

from redisched import __version__
from redisched.app import build_app, open_redis, reap_leases, reconcile, running, schedule, snapshot
from redisched.config import Settings
from redisched.embedded import EmbeddedError, ensure_servers, redact
from redisched.history import quarantine
from redisched.history.import_mula import MulaImportError, check_target, import_mula
from redisched.history.migrate import migrate
from redisched.queue.layout import QueueLayout
from redisched.server.connections import uvicorn_options

log = logging.getLogger("redisched")


DESCRIPTION = "A Redis-native drop-in for OpenKAT's scheduler (mula). With no command: serve."
SETTINGS_NOTE = (
    "Settings come from the environment, under mula's names (SCHEDULER_DB_URI, SCHEDULER_API_PORT, "
    "QUEUE_URI, ...) and redisched's own (REDISCHED_REDIS_URL, REDISCHED_DATA_DIR, ...): see the README, "
    "Configuration. With no Redis or Postgres URL, embedded servers start under REDISCHED_DATA_DIR "
    "(default .data)."
)
COMMANDS = {  # name: (the line in redisched --help, the description in redisched <name> --help)
    "serve": ("API, schedulers, snapshotter and lease reaper in one process (the default)",
              "Run the HTTP API, the schedulers, the snapshotter (Redis to Postgres history) and the "
              "lease reaper in one process until SIGINT or SIGTERM; with --workers N, N API processes share "
              "the port beside one worker process. redisched with no command runs this."),
    "api": ("the HTTP API only; run as many as you like, side by side",
            "Run the HTTP API only, until SIGINT or SIGTERM: any number of them side by side, next to "
            "one redisched worker."),
    "worker": ("schedulers, snapshotter and lease reaper, no API",
               "Run the schedulers, the snapshotter and the lease reaper, without the API, until SIGINT "
               "or SIGTERM."),
    "migrate": ("apply the Postgres migrations",
                "Apply the Postgres migrations the database lacks (redisched/history/migrations), then exit."),
    "reconcile": ("after Redis lost data: restore live tasks and schedules from Postgres",
                  "After Redis lost data: put the live tasks and the schedule mirrors back into Redis "
                  "from the Postgres history, then exit."),
    "quarantine": ("list or retry the events Postgres refused",
                   "List the events Postgres refused, which the snapshotter set aside so that their queue "
                   "goes on, or retry them: all of them, or the ids given (as listed)."),
    "bench": ("run the benchmarks of a checkout (redisched bench --help lists them)",
              "Run the benchmarks of a redisched checkout (python -m benchmarks)."),
    "import-mula": ("move an install from mula: its schedules, history and live tasks",
                    "Import a mula v1.20 database into this redisched: every schedule, the task history, and "
                    "the queued, dispatched and running tasks back into Redis (see the README, Moving from "
                    "mula). Stop mula first. Another schema is refused (exit status 2); a second run imports "
                    "nothing new."),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # everything after it is the benchmarks' own
        return bench_command(argv[1:])
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]
    args = _parser().parse_args(argv)
    settings = Settings()
    _configure_logging(settings)
    if getattr(args, "access_log", False) is None:
        args.access_log = settings.access_log
    try:
        return args.run(settings, args)
    except EmbeddedError as exc:  # a known failure to start: said, not a traceback
        print(f"redisched: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redisched", description=DESCRIPTION, epilog=SETTINGS_NOTE)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(title="commands", metavar="command")

    def command(name: str, run: Callable[[Settings, argparse.Namespace], int]) -> argparse.ArgumentParser:
        summary, description = COMMANDS[name]
        sub = commands.add_parser(name, help=summary, description=description, epilog=SETTINGS_NOTE)
        sub.set_defaults(run=run)
        return sub

    for name, run in (("serve", serve), ("api", api)):
        _http_options(command(name, run)).add_argument(
            "--workers", type=int, default=1, help="API processes sharing the port (default 1)"
        )
    command("worker", worker)
    command("migrate", migrate_command)
    command("reconcile", reconcile_command)
    dead = command("quarantine", quarantine_command)
    dead.add_argument("action", choices=("list", "retry"), help="list the quarantined events, or retry them")
    dead.add_argument("ids", nargs="*", help="retry only these (as listed); default all")
    command("bench", lambda _settings, _args: 0)  # listed here, run by main() before parsing
    command("import-mula", import_mula_command).add_argument(
        "mula_db_url", metavar="MULA_DATABASE_URL", help="mula's SCHEDULER_DB_URI, e.g. postgresql://user:pw@host/scheduler"
    )
    return parser


def _http_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", help="bind address (default SCHEDULER_API_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default SCHEDULER_API_PORT, 8000)")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                        help="log every request (default REDISCHED_ACCESS_LOG, on)")  # fmt: skip
    return parser


# --- commands --------------------------------------------------------------------------------


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """One process; with ``--workers N``, N API processes on the port beside one ``worker``
    process (schedulers, snapshotter, reaper), all on this process's one set of backends."""
    with _backends(settings) as settings:
        if args.workers <= 1:
            _serve_http(build_app(settings, snapshot, reap_leases, schedule), settings, args)
            return 0
        with _worker_process(settings):
            _serve_http_workers(settings, args)
    return 0


def api(settings: Settings, args: argparse.Namespace) -> int:
    with _backends(settings) as settings:
        if args.workers <= 1:
            _serve_http(build_app(settings), settings, args)
        else:
            _serve_http_workers(settings, args)
    return 0


def worker(settings: Settings, _args: argparse.Namespace) -> int:
    async def work(settings: Settings) -> None:
        async with running(settings, snapshot, reap_leases, schedule):
            log.info("worker running: snapshotter, lease reaper, schedulers")
            await _until_stopped()

    with _backends(settings) as settings:
        _run(work(settings))
    return 0


def migrate_command(settings: Settings, _args: argparse.Namespace) -> int:
    with _backends(settings, migrate_on_start=False) as settings:
        applied = _run(migrate(settings.db_uri))
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0


def reconcile_command(settings: Settings, _args: argparse.Namespace) -> int:
    async def restore(settings: Settings):
        async with running(settings) as services:
            return await reconcile(services)

    with _backends(settings) as settings:
        result = _run(restore(settings))
    print(f"restored {result.restored} tasks ({result.present} already live), {result.schedules} schedules mirrored")
    return 0


def quarantine_command(settings: Settings, args: argparse.Namespace) -> int:
    async def act(settings: Settings) -> list[str]:
        redis = open_redis(settings)
        layout = QueueLayout.from_settings(settings)
        try:
            if args.action == "retry":
                retried = await quarantine.retry(redis, layout, args.ids or None)
                return [f"retried {retried} events"]
            letters = await quarantine.listing(redis, layout)
            return [msgspec.json.encode(letter).decode() for letter in letters] or ["nothing quarantined"]
        finally:
            await redis.aclose()

    with _backends(settings, migrate_on_start=False) as settings:
        print("\n".join(_run(act(settings))))
    return 0


def bench_command(bench_args: list[str]) -> int:
    if not (Path.cwd() / "benchmarks").is_dir() and importlib.util.find_spec("benchmarks") is None:
        print(f"{COMMANDS['bench'][1]} There are none here: run it from a redisched checkout.", file=sys.stderr)
        return 2
    run = "import sys; from benchmarks.__main__ import main; sys.exit(main(sys.argv[1:], prog='redisched bench'))"
    return subprocess.call([sys.executable, "-c", run, *bench_args])


def import_mula_command(settings: Settings, args: argparse.Namespace) -> int:
    async def run(settings: Settings):
        await check_target(settings.db_uri)
        await migrate(settings.db_uri)
        async with running(settings) as services:
            return await import_mula(args.mula_db_url, services.queues, services.tasks, services.schedules)

    with _backends(settings, migrate_on_start=False) as settings:
        try:
            result = _run(run(settings))
        except MulaImportError as exc:
            print(f"import-mula: refused, nothing imported: {exc}", file=sys.stderr)
            return 2
    print(result.summary())
    return 0


# --- plumbing --------------------------------------------------------------------------------


@contextlib.contextmanager
def _backends(settings: Settings, *, migrate_on_start: bool = True) -> Iterator[Settings]:
    """``settings`` with Redis and Postgres URLs: the configured ones, else embedded servers
    (stopped on exit). Migrations run first when asked, or on an embedded Postgres."""
    redis_url, db_dsn, servers = ensure_servers(settings)
    if servers is not None:
        log.info("embedded servers under %s: redis %s, postgres %s", settings.data_dir, redact(redis_url), redact(db_dsn))
    try:
        if migrate_on_start and (settings.db_migrate_on_start or not settings.db_uri):
            applied = _run(migrate(db_dsn))
            log.info("migrations applied: %s", ", ".join(applied) or "none (up to date)")
        yield settings.model_copy(update={"redis_url": redis_url, "db_uri": db_dsn})
    finally:
        if servers is not None:
            servers.stop()


def _serve_http(app: object, settings: Settings, args: argparse.Namespace) -> None:
    """uvicorn (with uvloop when installed, httptools, the connection limits of
    server/connections.py) until SIGINT/SIGTERM."""
    host, port = args.host or settings.api_host, args.port or settings.api_port
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=args.access_log, **uvicorn_options(settings)
    )
    _exit_on_signals()  # uvicorn re-raises the signal that stopped it: leave through the finally blocks
    uvicorn.Server(config).run()


def _serve_http_workers(settings: Settings, args: argparse.Namespace) -> None:
    """``args.workers`` API processes (uvicorn's supervisor) sharing the port, on the Redis and
    Postgres of ``settings``, until SIGINT/SIGTERM."""
    os.environ.update(REDISCHED_REDIS_URL=settings.redis_url, SCHEDULER_DB_URI=settings.db_uri)
    uvicorn.run(
        "redisched.app:asgi_app", factory=True, workers=args.workers, log_config=None,
        host=args.host or settings.api_host, port=args.port or settings.api_port, access_log=args.access_log,
        **uvicorn_options(settings),
    )  # fmt: skip


@contextlib.contextmanager
def _worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """``redisched worker`` on the Redis and Postgres of ``settings`` (migrations already
    applied) for the duration of the block, then stopped. Should it die first, this process is
    sent SIGTERM: a serve without its snapshotter would answer while its history fell behind."""
    env = {**os.environ, "REDISCHED_REDIS_URL": settings.redis_url, "SCHEDULER_DB_URI": settings.db_uri}
    env["DATABASE_MIGRATION"] = "false"
    process = subprocess.Popen([sys.executable, "-m", "redisched", "worker"], env=env)
    leaving = threading.Event()

    def watch() -> None:
        code = process.wait()
        if not leaving.is_set():  # a Ctrl-C reached it too (exit 0), or it failed
            level = logging.INFO if code == 0 else logging.ERROR
            log.log(level, "the worker process (schedulers, snapshotter, reaper) exited with %s: stopping", code)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()
    try:
        yield process
    finally:
        leaving.set()
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("the worker process did not stop within %.0f s: killed", WORKER_STOP_SECONDS)
            process.kill()
            process.wait()


WORKER_STOP_SECONDS = 10.0


def _run(coroutine):
    """Run on uvloop when it is installed."""
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def _exit_on_signals() -> None:
    def leave(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)


async def _until_stopped() -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.logging_format == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO, handlers=[handler])


