"""What the routes run on, built once per process by ``redisched.app`` and kept in
``app.state.services``. Nothing here holds state of its own: any number of API processes
serve side by side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

from redisched.clients.http import ServiceClients
from redisched.clients.http.base import TTLCache
from redisched.config import Settings
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import SCHEDULERS
from redisched.queue.queue import TaskQueues


@dataclass
class Services:
    settings: Settings
    redis: Redis
    queues: TaskQueues
    tasks: TaskStore
    schedules: ScheduleStore
    externals: ServiceClients
    read_wait_seconds: float = 1.0  # how long a history read waits for the snapshotter
    # The last /health?externals=true probes: each dependency is asked once per period,
    # however many callers ask (concurrent callers share one round of probes).
    health_checks: TTLCache[None, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.health_checks = TTLCache(self.settings.health_cache_seconds)

    async def history_caught_up(self, scheduler_id: str | None = None) -> None:
        """Let Postgres catch up with every queue change acknowledged before this call (bounded:
        after ``read_wait_seconds`` the read goes ahead on what Postgres has)."""
        queues = [scheduler_id] if scheduler_id in SCHEDULERS else list(SCHEDULERS)
        layout = self.queues.layout
        await wait_caught_up(
            self.redis, layout.prefix, queues, timeout=self.read_wait_seconds, partitions=layout.partitions
        )


def services(request: Request) -> Services:
    return request.app.state.services
