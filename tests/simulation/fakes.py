"""Plain Python fakes of what the schedulers write to: the queues (TaskOutlet) and the history
(SchedulerHistory), plus a clock the test moves, and a context wiring them to a World."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
from croniter import croniter

from redisched.clients.amqp import Retryable
from redisched.history.scheduler_queries import TaskState
from redisched.models import Schedule, ScheduleCreate, TaskStatus, payload_hash
from redisched.schedulers.context import SchedulerContext
from tests.simulation.world import World

T0 = datetime(2030, 1, 7, 0, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Pushed:
    scheduler_id: str
    organisation: str
    data: dict[str, Any]
    priority: int
    schedule: bool
    hash: str


@dataclass
class FakeOutlet:
    pushed: list[Pushed] = field(default_factory=list)
    queued: dict[str, Pushed] = field(default_factory=dict)  # hash -> queued task
    live: dict[uuid.UUID, str] = field(default_factory=dict)  # task id -> status in Redis
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    unlinked: list[tuple[uuid.UUID, list[tuple[str, str]]]] = field(default_factory=list)
    full: bool = False

    async def push(self, scheduler_id, organisation, payload, priority, *, schedule=True, plugin_rule=None) -> bool:
        if self.full:
            raise Retryable("queue is full")
        data = msgspec.to_builtins(payload)
        task = Pushed(scheduler_id, organisation, data, priority, schedule, payload_hash(scheduler_id, data))
        if task.hash in self.queued:
            return False
        self.pushed.append(task)
        self.queued[task.hash] = task
        return True

    async def live_status(self, task_id: uuid.UUID) -> str | None:
        return self.live.get(task_id)

    async def set_status(self, task_id: uuid.UUID, status: TaskStatus) -> None:
        self.live[task_id] = status.value

    async def unlink_schedule(self, schedule_id: uuid.UUID, tasks: list[tuple[str, str]]) -> None:
        self.unlinked.append((schedule_id, tasks))

    async def cancel_queued(self, scheduler_id: str, organisation: str, input_ooi: str) -> int:
        self.cancelled.append((organisation, input_ooi))
        return 0

    def run_all(self) -> list[Pushed]:
        """A runner takes every queued task."""
        taken = list(self.queued.values())
        self.queued.clear()
        return taken


@dataclass
class FakeHistory:
    latest: dict[str, TaskState] = field(default_factory=dict)
    schedules: dict[uuid.UUID, Schedule] = field(default_factory=dict)
    failed: list[uuid.UUID] = field(default_factory=list)

    async def latest_tasks(self, hashes) -> dict[str, TaskState]:
        return {h: self.latest[h] for h in hashes if h in self.latest}

    async def mark_failed(self, task_id: uuid.UUID) -> None:
        self.failed.append(task_id)

    def add_schedule(self, scheduler_id: str, data: dict, deadline: datetime | None, cron: str | None = None) -> Schedule:
        organisation = data.get("organization") or data["organisation_id"]
        schedule = Schedule(
            id=uuid.uuid4(), scheduler_id=scheduler_id, organisation=organisation, hash=payload_hash(scheduler_id, data),
            data=data, schedule=cron, deadline_at=deadline, created_at=T0, modified_at=T0,
        )  # fmt: skip
        self.schedules[schedule.id] = schedule
        return schedule

    def _due(self, scheduler_id: str, now: datetime, limit: int) -> list[Schedule]:
        due = [
            s for s in self.schedules.values()
            if s.scheduler_id == scheduler_id and s.enabled and s.deadline_at is not None and s.deadline_at <= now
        ]  # fmt: skip
        return sorted(due, key=lambda s: s.deadline_at)[:limit]

    def _set(self, schedule_id: uuid.UUID, **changes: Any) -> None:
        self.schedules[schedule_id] = msgspec.structs.replace(self.schedules[schedule_id], **changes)

    async def claim_due(self, scheduler_id, now, limit, hold_until) -> list[Schedule]:
        due = self._due(scheduler_id, now, limit)
        for schedule in due:
            self._set(schedule.id, deadline_at=hold_until)
        return due

    async def fire_due(self, scheduler_id, now, limit, fire) -> int:
        due = self._due(scheduler_id, now, limit)
        for schedule in due:
            await fire(schedule)
            deadline = croniter(schedule.schedule, now).get_next(datetime) if schedule.schedule else None
            self._set(schedule.id, deadline_at=deadline)
        return len(due)

    async def postpone(self, schedule_id, deadline) -> None:
        self._set(schedule_id, deadline_at=deadline)

    async def disable(self, schedule_id) -> None:
        self._set(schedule_id, enabled=False)

    async def set_cron(self, schedule_id, cron, deadline) -> None:
        self._set(schedule_id, schedule=cron, deadline_at=deadline)

    async def delete_schedule(self, scheduler_id, schedule_hash):
        for schedule in list(self.schedules.values()):
            if schedule.scheduler_id == scheduler_id and schedule.hash == schedule_hash:
                del self.schedules[schedule.id]
                return schedule.id, []
        return None

    async def create_schedule(self, new: ScheduleCreate) -> bool:
        if any(s.hash == payload_hash(new.scheduler_id, new.data) for s in self.schedules.values()):
            return False
        self.add_schedule(new.scheduler_id, new.data, new.deadline_at, new.schedule)
        return True


def fake_context(world: World, clock: Clock, grace_hours: float = 24) -> tuple[SchedulerContext, FakeOutlet, FakeHistory]:
    outlet, history = FakeOutlet(), FakeHistory()
    katalogus, octopoes, bytes_client = world.clients()
    ctx = SchedulerContext(
        outlet=outlet, history=history, katalogus=katalogus, octopoes=octopoes, bytes=bytes_client,
        grace_period=timedelta(hours=grace_hours), clock=clock,
    )  # fmt: skip
    return ctx, outlet, history
