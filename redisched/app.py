"""Wiring: from Settings to the running parts (the API's services, the snapshotter, the lease
reaper, the schedulers). The CLI picks which parts a process runs; nothing here keeps state a
second process would need, so any number run side by side.

``asgi_app`` is an app factory for any ASGI server (``uvicorn --factory redisched.app:asgi_app``):
it reads the environment and opens its services in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aredis
from redis.exceptions import RedisError
from starlette.applications import Starlette

from redisched import telemetry
from redisched.cancellation import stop_if_cancelled
from redisched.clients.http import ServiceClients
from redisched.config import Settings
from redisched.history.db import open_pool
from redisched.history.reconcile import Reconciled
from redisched.history.reconcile import reconcile as reconcile_from_history
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import Snapshotter
from redisched.history.tasks import TaskStore
from redisched.models import SCHEDULERS
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues
from redisched.schedulers import runner
from redisched.queue.stats import process_name, say_alive
from redisched.services import Services
from redisched.server.app import api_app

log = logging.getLogger("redisched")

REDIS_SOCKET_TIMEOUT = 5.0  # an API call to Redis slower than this is a 503 (the long-poll blocks less)
SHUTDOWN_GRACE_SECONDS = 5.0
STOP_AT_LEAST_SECONDS = 0.5  # what a loop gets to stop when those stopped before it took the grace
REAP_INTERVAL_SECONDS = 1.0
REAP_BATCH = 1000

Background = Callable[[Services], Awaitable[None]]


def open_redis(settings: Settings, socket_timeout: float | None = REDIS_SOCKET_TIMEOUT) -> aredis.Redis:
    """A client for the API (reads time out: a 503 beats a hung request) or, with
    ``socket_timeout=None``, for a loop that blocks on streams. On Python 3.11 a read under a
    socket timeout can swallow a task's cancellation, so blocking loops must not have one."""
    options = {"socket_timeout": socket_timeout, "socket_connect_timeout": REDIS_SOCKET_TIMEOUT}
    if settings.redis_cluster:
        return aredis.RedisCluster.from_url(settings.redis_url, max_connections=settings.redis_max_connections, **options)
    # Callers past the pool's size wait their turn (a long-poll holds a connection) instead
    # of failing with "Too many connections".
    pool = aredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_max_connections, timeout=REDIS_SOCKET_TIMEOUT, **options
    )
    return aredis.Redis(connection_pool=pool)


async def open_services(settings: Settings) -> Services:
    """Connections for ``settings.redis_url`` and ``settings.db_uri`` (both must be set)."""
    redis = open_redis(settings)
    queues = TaskQueues(redis, QueueLayout.from_settings(settings))
    if (tracer := telemetry.tracer(settings)) is not None:
        telemetry.instrument(queues, tracer)
    try:
        await queues.load_functions()
        await queues.check_layout()
        await queues.start_limits()
        await queues.index_pairs()
        await queues.index_orders()
        await queues.index_fair()  # after the pairs and orders: it places tasks in the fair pair ranges too
        await queues.set_weights(settings.organisation_weights)
    except RedisError as exc:  # the API starts anyway and answers 503 until Redis is back
        log.warning("Redis unreachable at start, functions not loaded, partition count not checked: %r", exc)
    pool = await open_pool(settings.db_uri, statement_timeout_ms=settings.db_statement_timeout_ms)
    return Services(
        settings=settings,
        redis=redis,
        queues=queues,
        tasks=TaskStore(pool),
        schedules=ScheduleStore(
            pool, redis, queues.layout, grace_period=settings.pq_grace_period
        ),
        externals=ServiceClients.from_settings(settings),
    )


async def close_services(services: Services) -> None:
    await services.externals.aclose()
    await services.tasks.pool.close()
    await services.redis.aclose()


@contextlib.asynccontextmanager
async def running(settings: Settings, *background: Background) -> AsyncIterator[Services]:
    """Services open, and the ``background`` loops running, for the duration of the block.
    They stop one by one, the last started first, within SHUTDOWN_GRACE_SECONDS together:
    the schedulers (started after the snapshotter) drain their listeners' messages while the
    history those handlers wait for still moves."""
    services = await open_services(settings)
    tasks = [asyncio.create_task(loop(services), name=loop.__name__) for loop in background]
    try:
        yield services
    finally:
        clock = asyncio.get_running_loop().time
        deadline = clock() + SHUTDOWN_GRACE_SECONDS
        for task in reversed(tasks):
            task.cancel()
            await asyncio.wait([task], timeout=max(deadline - clock(), STOP_AT_LEAST_SECONDS))
            if not task.done():
                log.warning("%s did not stop within %.0f s", task.get_name(), SHUTDOWN_GRACE_SECONDS)
        await close_services(services)


def build_app(settings: Settings, *background: Background) -> Starlette:
    """The API whose lifespan opens its services (and runs ``background`` loops alongside)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, heartbeat, *background) as services:
            app.state.services = services
            _freeze_startup_objects()
            yield

    return api_app(settings, lifespan=lifespan)


def _freeze_startup_objects() -> None:
    """Move what exists once the process has started (modules, the app, its connections: some
    80,000 objects, nearly all of them for good) out of the cyclic GC's sight. Under load the
    requests in flight outlive the young generations and trigger a full collection about every
    second; over all those objects each one took 40-80 ms, stalling every request in flight
    (the HTTP pop's p99). Frozen, a full collection only walks what came since."""
    gc.collect()
    gc.freeze()


def asgi_app() -> Starlette:
    return build_app(Settings())


# --- background loops ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def loop_redis(settings: Settings) -> AsyncIterator[aredis.Redis]:
    """A Redis client of a background loop's own, without socket timeout (see open_redis)."""
    redis = open_redis(settings, socket_timeout=None)
    try:
        yield redis
    finally:
        await redis.aclose()


async def snapshot(services: Services) -> None:
    """Follow the queues' event streams into Postgres until cancelled."""
    async with loop_redis(services.settings) as redis:
        queues = TaskQueues(redis, services.queues.layout)
        await Snapshotter(
            redis,
            services.tasks,
            services.schedules,
            layout=services.queues.layout,
            forget=queues.forget_finished,
        ).run()


async def heartbeat(services: Services) -> None:
    """Every API process says it is alive every few seconds (the dashboard's list of API
    processes), until cancelled."""
    name = process_name()
    while True:
        try:
            await say_alive(services.redis, services.settings.key_prefix, name)
        except RedisError as exc:  # Redis away: the dashboard cannot be read either
            log.debug("heartbeat failed: %r", exc)
        stop_if_cancelled()
        await asyncio.sleep(services.settings.heartbeat_seconds)


async def reap_leases(services: Services) -> None:
    """Every second, take back the tasks whose lease expired (requeued, or failed after
    ``max_tries``), in bounded batches, until cancelled."""
    async with loop_redis(services.settings) as redis:
        queues = TaskQueues(redis, services.queues.layout)
        while True:
            for scheduler_id in SCHEDULERS:
                try:
                    await _reap_queue(queues, scheduler_id)
                except Exception as exc:  # Redis away: try again next round
                    stop_if_cancelled(exc)
                    log.exception("reaping %s failed", scheduler_id)
            stop_if_cancelled()
            await asyncio.sleep(REAP_INTERVAL_SECONDS)


async def _reap_queue(queues: TaskQueues, scheduler_id: str) -> None:
    while True:
        requeued, failed = await queues.reap(scheduler_id, max_count=REAP_BATCH)
        if requeued or failed:
            log.info("%s: expired leases: %d requeued, %d failed", scheduler_id, requeued, failed)
        if requeued + failed < REAP_BATCH:
            return


async def schedule(services: Services) -> None:
    """Run the boefje, normalizer and report schedulers until cancelled."""
    await runner.run(services)


# --- one-off commands ------------------------------------------------------------------------


async def reconcile(services: Services) -> Reconciled:
    """After Redis lost data: schedule mirrors and live tasks back from Postgres."""
    return await reconcile_from_history(services.queues, services.tasks, services.schedules)
