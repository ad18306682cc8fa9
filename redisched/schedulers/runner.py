"""The schedulers at work in one process: the RabbitMQ listeners that feed them events and the
periodic rounds (new boefjes, due boefje schedules, due report schedules), as asyncio tasks.

    runner = await run_schedulers(settings, queues, history, clients)
    ...
    await runner.stop()

A round that fails is logged (with its traceback on the first failure in a row) and tried
again with backoff; nothing a scheduler does can end the process. A scheduler whose external
services are not configured idles and says so once. Any number of processes run side by
side: the listeners compete for messages, new boefjes are claimed in Redis, due schedules
are locked in Postgres.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg

from redisched.cancellation import stop_if_cancelled
from redisched.clients.amqp import (
    RAW_FILE_RECEIVED,
    SCAN_PROFILE_MUTATIONS,
    Listener,
    RawFileReceived,
    Retryable,
    ScanProfileMutation,
    json_handler,
)
from redisched.clients.http import ServiceClients, ServiceUnavailable
from redisched.history.scheduler_queries import HistoryBehind
from redisched.config import Settings
from redisched.history.scheduler_queries import SchedulerHistory
from redisched.models import utcnow
from redisched.queue.queue import TaskQueues
from redisched.services import Services
from redisched.schedulers.boefje import BoefjeScheduler
from redisched.schedulers.exclusive import MessageLocks
from redisched.schedulers.context import Clock, SchedulerContext
from redisched.schedulers.normalizer import NormalizerScheduler
from redisched.schedulers.outlet import TaskOutlet
from redisched.schedulers.report import ReportScheduler
from redisched.schedulers.seen import SeenBoefjes

log = logging.getLogger(__name__)

M = TypeVar("M")

DEFAULT_INTERVAL = 60.0
FIRST_RETRY_SECONDS = 1.0
BOEFJE_NEEDS = ("katalogus", "octopoes", "bytes")
NORMALIZER_NEEDS = ("katalogus",)

Step = Callable[[], Awaitable[None]]


class SchedulerRunner:
    """The boefje, normalizer and report schedulers with their listeners and periodic rounds."""

    def __init__(
        self,
        ctx: SchedulerContext,
        seen: SeenBoefjes,
        *,
        unconfigured: Iterable[str] = (),
        amqp_url: str | None = None,
        prefetch_count: int = 100,
        interval: float | None = DEFAULT_INTERVAL,
        mutations_queue: str = SCAN_PROFILE_MUTATIONS,
        raw_files_queue: str = RAW_FILE_RECEIVED,
        listener_options: dict[str, Any] | None = None,
        locks: MessageLocks | None = None,
    ) -> None:
        missing = set(unconfigured)
        self.locks = locks
        self.boefje = BoefjeScheduler(ctx, seen) if missing.isdisjoint(BOEFJE_NEEDS) else None
        self.normalizer = NormalizerScheduler(ctx) if missing.isdisjoint(NORMALIZER_NEEDS) else None
        self.report = ReportScheduler(ctx)
        self.missing = sorted(missing)
        self.amqp_url = amqp_url
        self.prefetch_count = prefetch_count
        self.interval = interval
        self.mutations_queue = mutations_queue
        self.raw_files_queue = raw_files_queue
        self.listener_options = listener_options or {}
        self.listeners: list[Listener] = []
        self._loops: list[asyncio.Task[None]] = []

    def rounds(self) -> dict[str, Step]:
        """The periodic rounds of the schedulers that are not idle, by name."""
        steps = {"report: due schedules": self.report.fire_due}
        if self.boefje is not None:
            steps["boefje: new boefjes"] = self.boefje.sweep_new_boefjes
            steps["boefje: due schedules"] = self.boefje.reschedule_due
        return steps

    def handlers(self) -> dict[str, Callable[[bytes], Awaitable[None]]]:
        """Queue name -> message handler, for the schedulers that are not idle."""
        found = {}
        if self.boefje is not None:
            found[self.mutations_queue] = _handler(ScanProfileMutation, self.boefje.handle_mutation, self.locks)
        if self.normalizer is not None:
            found[self.raw_files_queue] = _handler(RawFileReceived, self.normalizer.handle_raw_file, self.locks)
        return found

    async def start(self) -> None:
        self._announce_idle()
        if self.amqp_url:
            for queue, handle in self.handlers().items():
                listener = Listener(
                    self.amqp_url, queue, handle, prefetch_count=self.prefetch_count, **self.listener_options
                )
                listener.start()
                self.listeners.append(listener)
        if self.interval is not None:
            for name, step in self.rounds().items():
                self._loops.append(asyncio.create_task(supervise(name, step, self.interval), name=name))

    async def tick(self) -> None:
        """Run every periodic round once, side by side (what the loops do each interval)."""
        await asyncio.gather(*(step() for step in self.rounds().values()))

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(*(listener.stop() for listener in self.listeners))
        self._loops.clear()
        self.listeners.clear()

    def _announce_idle(self) -> None:
        if self.boefje is None:
            log.warning("boefje scheduler idle: %s not configured", ", ".join(self.missing))
        if self.normalizer is None:
            log.warning("normalizer scheduler idle: katalogus not configured")
        if not self.amqp_url:
            log.warning("no RabbitMQ configured (QUEUE_URI): scan profile mutations and raw files are not read")


def build_schedulers(
    settings: Settings,
    queues: TaskQueues,
    history: SchedulerHistory,
    clients: ServiceClients,
    *,
    clock: Clock = utcnow,
    interval: float | None = DEFAULT_INTERVAL,
    **options: Any,
) -> SchedulerRunner:
    """The schedulers, not started yet. ``interval``: seconds between periodic rounds (None:
    only on ``runner.tick()``). ``options`` go to SchedulerRunner (queue names, listener
    options)."""
    ctx = SchedulerContext(
        outlet=TaskOutlet(queues),
        history=history,
        katalogus=clients.katalogus,
        octopoes=clients.octopoes,
        bytes=clients.bytes,
        grace_period=timedelta(seconds=settings.pq_grace_period),
        clock=clock,
    )
    return SchedulerRunner(
        ctx,
        SeenBoefjes(queues.redis, queues.layout.prefix),
        locks=MessageLocks(queues.redis, queues.layout.prefix),
        unconfigured=clients.unconfigured(),
        amqp_url=settings.amqp_uri,
        prefetch_count=settings.rabbitmq_prefetch_count,
        interval=interval,
        **options,
    )


async def run_schedulers(
    settings: Settings, queues: TaskQueues, history: SchedulerHistory, clients: ServiceClients, **options: Any
) -> SchedulerRunner:
    """Build and start the schedulers (options: see ``build_schedulers``); ``await
    runner.stop()`` ends them."""
    runner = build_schedulers(settings, queues, history, clients, **options)
    await runner.start()
    return runner


async def run(services: Services) -> None:
    """``redisched.app``'s hook: the schedulers on the process's services, until cancelled."""
    history = SchedulerHistory(services.tasks, services.schedules)
    settings = services.settings
    runner = await run_schedulers(settings, services.queues, history, services.externals, interval=settings.scheduler_interval)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.stop()


async def supervise(name: str, step: Step, interval: float) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled; a failure is logged and the
    step retried after 1, 2, 4 ... seconds (at most ``interval``)."""
    failures = 0
    while True:
        try:
            await step()
        except Exception as exc:
            stop_if_cancelled(exc)
            failures += 1
            delay = min(interval, FIRST_RETRY_SECONDS * 2 ** (failures - 1))
            if failures == 1:
                log.exception("%s failed; retrying in %.0f s", name, delay)
            else:
                log.warning("%s failed again (%d in a row): %r; retrying in %.0f s", name, failures, exc, delay)
        else:
            if failures:
                log.info("%s works again after %d failures", name, failures)
            failures, delay = 0, interval
        stop_if_cancelled()
        await asyncio.sleep(delay)


def _handler(
    model: type[M], handle: Callable[[M], Awaitable[None]], locks: MessageLocks | None
) -> Callable[[bytes], Awaitable[None]]:
    """A listener handler for ``handle``. An outage of a service it needs is Retryable: the
    listener holds the message and tries again instead of dead-lettering it. With ``locks``,
    a message is handled by one handler at a time (see exclusive.py)."""

    async def handle_or_retry(message: M) -> None:
        try:
            await handle(message)
        except (ServiceUnavailable, psycopg.OperationalError, HistoryBehind) as exc:
            raise Retryable(str(exc)) from exc

    decoded = json_handler(model, handle_or_retry)
    if locks is None:
        return decoded

    async def handle_alone(body: bytes) -> None:
        async with locks.holding(body):
            await decoded(body)

    return handle_alone
