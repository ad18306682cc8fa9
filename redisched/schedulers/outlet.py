"""Where the schedulers put their tasks: the Redis queues, through the same scripts the API
uses. A task whose hash is queued already is not pushed again (mula's NotAllowedError)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from redisched import filters
from redisched.clients.amqp import Retryable
from redisched.errors import Conflict, QueueFull
from redisched.limit_rules import LimitRule
from redisched.models import Payload, TaskStatus
from redisched.queue.queue import TaskQueues

CANCEL_BATCH = 1000


class TaskOutlet:
    def __init__(self, queues: TaskQueues) -> None:
        self.queues = queues

    async def push(
        self,
        scheduler_id: str,
        organisation: str,
        payload: Payload,
        priority: int,
        *,
        schedule: bool = True,
        plugin_rule: LimitRule | None = None,
    ) -> bool:
        """Queue the task; False when a twin with the same hash is live (queued, dispatched or
        running: Redis knows before the history does). A full queue raises Retryable: the
        event (or the next round) tries again later. ``plugin_rule``: the boefje's own
        rate-limit group (Katalogus)."""
        try:
            await self.queues.push(
                scheduler_id,
                organisation=organisation,
                data=msgspec.to_builtins(payload),
                priority=priority,
                task_id=getattr(payload, "id", None),
                link_schedule=schedule,
                refuse_live_twin=True,
                plugin_rule=plugin_rule,
            )
        except Conflict:
            return False
        except QueueFull as exc:
            raise Retryable(f"{scheduler_id} queue is full") from exc
        return True

    async def live_status(self, task_id: uuid.UUID) -> str | None:
        """The task's status in Redis; None when no queue holds it any more."""
        record = await self.queues.get(task_id)
        return record.status if record is not None else None

    async def set_status(self, task_id: uuid.UUID, status: TaskStatus) -> None:
        await self.queues.patch(task_id, {"status": status})

    async def unlink_schedule(self, schedule_id: uuid.UUID, tasks: list[tuple[str, str]]) -> None:
        """A deleted schedule's live tasks, (scheduler id, task id), no longer name it."""
        await self.queues.unlink_schedule(schedule_id, tasks)

    async def cancel_queued(self, scheduler_id: str, organisation: str, input_ooi: str) -> int:
        """Cancel the queued tasks of this organisation on this object; returns how many. The
        tasks of limit groups waiting past their group's head are not on the queue (peek does
        not see them): their own index names them."""
        node = filters.parse_filter_request(_on_object(organisation, input_ooi))
        queued = [record.id for record in await self.queues.peek(scheduler_id, node, limit=CANCEL_BATCH)]
        waiting = await self.queues.waiting_on_object(scheduler_id, organisation, input_ooi, CANCEL_BATCH)
        cancelled = 0
        for task_id in dict.fromkeys(queued + waiting):  # a group's head is in both
            record = await self.queues.patch(task_id, {"status": TaskStatus.CANCELLED})
            cancelled += record is not None
        return cancelled


def _on_object(organisation: str, input_ooi: str) -> dict[str, Any]:
    return {
        "filters": [
            {"column": "organisation", "operator": "eq", "value": organisation},
            {"column": "data", "field": "input_ooi", "operator": "eq", "value": input_ooi},
        ]
    }
