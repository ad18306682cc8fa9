"""The queue's operations, one method each: the method builds the operation's plan
(plans.py) and hands it to a driver (driver.py). ``TaskQueues`` (queue.py, asyncio) and
``Client`` (client.py, sync) are this class on their own driver, so they have the same
methods, defaults and behaviour; on asyncio each method returns an awaitable.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from redisched.errors import SchedulerError
from redisched.limit_rules import LimitRule, RuleSet
from redisched.queue import plans
from redisched.queue.commands import QueueCommands
from redisched.queue.driver import AsyncDriver, SyncDriver
from redisched.queue.layout import QueueLayout
from redisched.queue.places import TaskPlaces
from redisched.queue.records import TaskRecord
from redisched.queue.plans import FilterArg


class QueueFacade:
    """The three scheduler queues on one Redis (or Redis Cluster), each in one or more
    partitions: a push goes to the partition of its hash, a pop takes from the partitions
    in turn, starting at a different one each time."""

    def __init__(self, driver: SyncDriver | AsyncDriver, layout: QueueLayout) -> None:
        self.redis = driver.redis
        self.layout = layout
        self.commands = QueueCommands(layout)
        self.driver = driver
        self.run = driver.run  # run(plan): the plan's result (an awaitable on asyncio)
        self._next_start = itertools.count()
        self._places = TaskPlaces()  # where the tasks this process handed out live (places.py)

    def queue(self, scheduler_id: str) -> BoundQueue:
        """One queue's operations, without repeating its id."""
        return BoundQueue(self, scheduler_id)

    def push(self, scheduler_id: str, **task: Any) -> TaskRecord:
        return self.run(plans.push(self.commands, scheduler_id, **task))

    def push_many(self, scheduler_id: str, tasks: list[dict[str, Any]]) -> list[TaskRecord | SchedulerError]:
        """Push each of ``tasks`` (push's keyword arguments, one dict per task) as ``push``
        would, in order, in a few script calls: per task its record, or the error its push
        alone would raise (returned, not raised)."""
        return self.run(plans.push_many(self.commands, scheduler_id, list(tasks)))

    def pop(
        self, scheduler_id: str, filters: FilterArg = None, limit: int | None = None, token: str | None = None,
        *, status: str = "dispatched",
    ) -> list[TaskRecord]:
        """Up to ``limit`` tasks (None: as many as one pop may hand out); ``filters`` a
        FilterRequest dict or a parsed tree. ``status``: what they become, "dispatched" (the
        runner patches "running" when it starts, as mula's do) or "running" (a worker that
        starts at once saves that call)."""
        start = next(self._next_start)
        return self.run(plans.pop(self.commands, scheduler_id, filters, limit, token, start=start, status=status,
                                  places=self._places))

    def peek(self, scheduler_id: str, filters: FilterArg = None, limit: int = 10) -> list[TaskRecord]:
        return self.run(plans.peek(self.commands, scheduler_id, filters, limit))

    def patch(self, task_id: uuid.UUID | str, changes: dict[str, Any], token: str | None = None) -> TaskRecord | None:
        """Patch a live task wherever it is queued; None when no queue has it."""
        return self.run(plans.patch(self.commands, task_id, changes, token, self._places))

    def pop_next(
        self, task_id: uuid.UUID | str, changes: dict[str, Any], token: str | None, filters: FilterArg = None,
        limit: int | None = 1, *, status: str = "dispatched",
    ) -> tuple[TaskRecord | None, list[TaskRecord]]:
        """Finish and fetch: patch a live task (a runner's "completed" with its lease token)
        and pop the next ones from its queue, in one script call when the token is a pop's;
        ``status`` as in ``pop``. (None, []) when no queue has the task."""
        start = next(self._next_start)
        return self.run(plans.pop_next(self.commands, task_id, changes, token, filters, limit, start=start,
                                       status=status, places=self._places))

    def requeue(self, scheduler_id: str, task_id: uuid.UUID | str, task_hash: str) -> TaskRecord | None:
        """Put back a dispatched task its runner hands back unstarted; None when none such."""
        return self.run(plans.requeue(self.commands, scheduler_id, task_id, task_hash))

    def unlink_schedule(self, schedule_id: uuid.UUID | str, tasks: list[tuple[str, str]]) -> int:
        """A deleted schedule's live tasks, (scheduler id, task id), no longer name it."""
        return self.run(plans.unlink_schedule(self.commands, schedule_id, tasks))

    def extend_lease(
        self, scheduler_id: str, task_id: uuid.UUID | str, token: str, seconds: float, partition: int | None = None
    ) -> int:
        return self.run(plans.extend_lease(self.commands, scheduler_id, task_id, token, seconds, partition))

    def reap(self, scheduler_id: str, max_count: int = 1000) -> tuple[int, int]:
        return self.run(plans.reap(self.commands, scheduler_id, max_count))

    def forget_finished(self, scheduler_id: str, items: list[tuple[str, str]], partition: int | None = None) -> int:
        return self.run(plans.forget(self.commands, scheduler_id, items, partition))

    def restore(self, record: TaskRecord) -> bool:
        return self.run(plans.restore(self.commands, record))

    def restore_all(self, records: list[TaskRecord]) -> list[bool]:
        return self.run(plans.restore_all(self.commands, records))

    def get(self, task_id: uuid.UUID | str) -> TaskRecord | None:
        return self.run(plans.get(self.layout, task_id))

    def locate(self, task_id: uuid.UUID | str) -> Any:
        """The QueueKeys of the partition that holds this live task, or None."""
        return self.run(plans.locate(self.layout, task_id))

    def qsize(self, scheduler_id: str) -> int:
        return self.run(plans.qsize(self.commands, scheduler_id))

    def last_activity_us(self, scheduler_id: str) -> int | None:
        return self.run(plans.last_activity_us(self.commands, scheduler_id))

    def set_aside_counts(self) -> dict[str, tuple[int, int]]:
        """Per queue: (records moved to quarantine, stray members removed) by the scripts."""
        return self.run(plans.set_aside_counts(self.layout))

    def waiting_on_object(self, scheduler_id: str, organisation: str, input_ooi: str, limit: int = 1000) -> list[str]:
        """Ids of the queued tasks of limit groups on this object, waiting ones included."""
        return self.run(plans.waiting_on_object(self.commands, scheduler_id, organisation, input_ooi, limit))

    def limit_rules(self) -> RuleSet:
        """The limit rules in force (read from Redis)."""
        return self.run(plans.read_limits(self.commands))

    def replace_limits(self, rules: tuple[LimitRule, ...]) -> RuleSet:
        """Put these limit rules in force for every process (PUT /limits)."""
        return self.run(plans.replace_limits(self.commands, rules))

    def start_limits(self) -> RuleSet:
        return self.run(plans.start_limits(self.commands))

    def set_weights(self, weights: dict[str, float]) -> None:
        """Organisations' weights for the fair pop (every queue, every partition)."""
        return self.run(plans.set_weights(self.layout, weights))

    def reset_weight(self, organisation: str) -> None:
        return self.run(plans.reset_weight(self.layout, organisation))

    def weights(self) -> dict[str, float]:
        """The weights set; an organisation not named weighs 1."""
        return self.run(plans.weights(self.layout))

    def organisation_shares(self, scheduler_id: str, max_orgs: int = 1000) -> list[plans.OrganisationShare]:
        """Per organisation: depth, tasks served with fairness on, share, weight, virtual time."""
        return self.run(plans.organisation_shares(self.commands, scheduler_id, max_orgs))

    def load_functions(self) -> None:
        return self.run(plans.load_functions())

    def check_layout(self) -> None:
        return self.run(plans.check_layout(self.layout))

    def index_fair(self) -> int:
        """The fair pop's structures up to date with the queues (fairness on), or marked stale (off)."""
        return self.run(plans.index_fair(self.commands))

    def index_pairs(self) -> int:
        """Build the pair index for tasks queued by an earlier version (the service does it
        at start); how many bounded steps it took."""
        return self.run(plans.index_pairs(self.commands))

    def index_orders(self) -> int:
        """Move the tasks an earlier version queued under text order keys to packed ones (the
        service does it at start); how many bounded steps it took."""
        return self.run(plans.index_orders(self.commands))


class BoundQueue:
    """One queue of a facade: ``client.queue("boefje").pop(limit=1)``."""

    def __init__(self, queues: QueueFacade, scheduler_id: str) -> None:
        queues.commands.scheduler(scheduler_id)  # NotFound for an unknown one
        self.queues, self.id = queues, scheduler_id

    def push(self, **task: Any) -> TaskRecord:
        return self.queues.push(self.id, **task)

    def push_many(self, tasks: list[dict[str, Any]]) -> list[TaskRecord | SchedulerError]:
        return self.queues.push_many(self.id, tasks)

    def pop(
        self, filters: FilterArg = None, limit: int | None = None, token: str | None = None,
        *, status: str = "dispatched",
    ) -> list[TaskRecord]:
        return self.queues.pop(self.id, filters, limit, token, status=status)

    def peek(self, filters: FilterArg = None, limit: int = 10) -> list[TaskRecord]:
        return self.queues.peek(self.id, filters, limit)

    def patch(self, task_id: uuid.UUID | str, changes: dict[str, Any], token: str | None = None) -> TaskRecord | None:
        return self.queues.patch(task_id, changes, token)

    def pop_next(
        self, task_id: uuid.UUID | str, changes: dict[str, Any], token: str | None, filters: FilterArg = None,
        limit: int | None = 1, *, status: str = "dispatched",
    ) -> tuple[TaskRecord | None, list[TaskRecord]]:
        return self.queues.pop_next(task_id, changes, token, filters, limit, status=status)

    def extend_lease(self, task_id: uuid.UUID | str, token: str, seconds: float) -> int:
        return self.queues.extend_lease(self.id, task_id, token, seconds)

    def reap(self, max_count: int = 1000) -> tuple[int, int]:
        return self.queues.reap(self.id, max_count)

    def qsize(self) -> int:
        return self.queues.qsize(self.id)
