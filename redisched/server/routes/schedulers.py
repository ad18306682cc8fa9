"""``/schedulers``: the three queues, push and pop."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from starlette.requests import Request

from redisched.errors import Conflict
from redisched.models import FINISHED, SCHEDULERS, PoppedStatus, Scheduler, Task, TaskPush, us_to_datetime
from redisched.queue.commands import QueueCommands, keeps_given_id
from redisched.queue.records import TaskRecord
from redisched.server.inputs import as_struct, filter_body, json_body, query_enum, query_float, query_int
from redisched.server.longpoll import pop_or_wait, server_stopping
from redisched.server.responses import JSON, PopResult
from redisched.server.services import services
from redisched.services import Services
from redisched.server.validation import InvalidRequest

LEASE_TOKEN_HEADER = "X-Lease-Token"


async def list_schedulers(request: Request) -> JSON:
    found = await asyncio.gather(*(_scheduler(services(request), sid) for sid in SCHEDULERS))
    return JSON(found)


async def get_scheduler(request: Request) -> JSON:
    scheduler_id = request.path_params["scheduler_id"]
    QueueCommands.scheduler(scheduler_id)  # 404 when unknown
    return JSON(await _scheduler(services(request), scheduler_id))


async def push(request: Request) -> JSON:
    """mula's push, plus a hand-back: a whole Task body naming a task this queue holds as
    dispatched (same id, same hash) puts it back on the queue at once, as it was."""
    document = await json_body(request, required=True)
    try:
        item = as_struct(document, TaskPush)
    except InvalidRequest:
        handed_back = await _hand_back(services(request), request.path_params["scheduler_id"], document)
        if handed_back is None:
            raise  # mula's 422: a Task is no TaskPush
        return JSON(handed_back.to_task(), status_code=201)
    await _refuse_a_finished_tasks_id(services(request), request.path_params["scheduler_id"], item)
    record = await services(request).queues.push(
        request.path_params["scheduler_id"],
        organisation=item.organisation,
        data=item.data,
        priority=item.priority,
        task_id=item.id,
        item_scheduler_id=item.scheduler_id,
    )
    return JSON(record.to_task(), status_code=201)


async def pop(request: Request) -> JSON:
    """mula's pop, plus ``?wait=<seconds>`` (long-poll) and ``?status=running`` (the tasks
    handed out running, for a worker that starts each at once). The popped tasks' lease token
    (one per pop) is in the ``X-Lease-Token`` header, for lease extension and token-checked
    patches."""
    limit = query_int(request, "limit", minimum=0)
    wait = query_float(request, "wait", 0.0)
    status = query_enum(request, "status", PoppedStatus) or "dispatched"
    node = await filter_body(request)
    records = await pop_or_wait(
        services(request).queues,
        request.path_params["scheduler_id"],
        node,
        limit,
        wait,
        request.is_disconnected,
        server_stopping(request.scope),
        status,
    )
    return JSON(PopResult([record.to_task() for record in records]), headers=lease_header(records))


async def _refuse_a_finished_tasks_id(services: Services, scheduler_id: str, item: TaskPush) -> None:
    """A push that keeps its given id must not take a finished task's: the history would
    replace that task's row (mula: 500 from its primary key). Live tasks are Redis' to refuse."""
    QueueCommands.scheduler(scheduler_id)  # 404 first
    if keeps_given_id(scheduler_id, item.data, item.id):
        stored = await services.tasks.get(item.id)
        if stored is not None and stored.status.value in FINISHED:
            raise Conflict("a finished task already has this id")


async def _hand_back(services: Services, scheduler_id: str, document: Any) -> TaskRecord | None:
    """OpenKAT's boefje runner, stopping, pushes the tasks it popped but had not started as
    whole Task bodies (mula answers 422 and they sit dispatched). Requeued here when the queue
    holds that task as dispatched with that hash; None for any other body."""
    if scheduler_id not in SCHEDULERS or not isinstance(document, dict) or not document.keys() <= TASK_FIELDS:
        return None
    task_id, task_hash = document.get("id"), document.get("hash")
    if document.get("scheduler_id", scheduler_id) != scheduler_id or not isinstance(task_hash, str):
        return None
    try:
        task_id = uuid.UUID(task_id)
    except (TypeError, ValueError, AttributeError):
        return None
    return await services.queues.requeue(scheduler_id, task_id, task_hash)


TASK_FIELDS = frozenset(Task.__struct_fields__)


async def _scheduler(services: Services, scheduler_id: str) -> Scheduler:
    qsize, last_activity_us = await asyncio.gather(
        services.queues.qsize(scheduler_id), services.queues.last_activity_us(scheduler_id)
    )
    scheduler = SCHEDULERS[scheduler_id]
    return Scheduler(
        id=scheduler_id,
        type=scheduler_id,
        item_type=scheduler.item_type,
        qsize=qsize,
        last_activity=us_to_datetime(last_activity_us) if last_activity_us is not None else None,
    )


def lease_header(records: list[TaskRecord]) -> dict[str, str] | None:
    return {LEASE_TOKEN_HEADER: records[0].lease} if records and records[0].lease else None
