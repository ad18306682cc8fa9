"""``/schedulers``: the three queues, push and pop."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from redisched.models import SCHEDULERS, Scheduler, TaskPush, us_to_datetime
from redisched.queue.commands import QueueCommands
from redisched.queue.records import TaskRecord
from redisched.server.inputs import filter_body, query_float, query_int, struct_body
from redisched.server.longpoll import pop_or_wait
from redisched.server.responses import JSON, PopResult
from redisched.server.services import Services, services

LEASE_TOKEN_HEADER = "X-Lease-Token"


async def list_schedulers(request: Request) -> JSON:
    found = await asyncio.gather(*(_scheduler(services(request), sid) for sid in SCHEDULERS))
    return JSON(found)


async def get_scheduler(request: Request) -> JSON:
    scheduler_id = request.path_params["scheduler_id"]
    QueueCommands.scheduler(scheduler_id)  # 404 when unknown
    return JSON(await _scheduler(services(request), scheduler_id))


async def push(request: Request) -> JSON:
    item = await struct_body(request, TaskPush)
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
    """mula's pop, plus ``?wait=<seconds>`` (long-poll). The popped tasks' lease token (one per
    pop) is in the ``X-Lease-Token`` header, for lease extension and token-checked patches."""
    limit = query_int(request, "limit", minimum=0)
    wait = query_float(request, "wait", 0.0)
    node = await filter_body(request)
    records = await pop_or_wait(
        services(request).queues, request.path_params["scheduler_id"], node, limit, wait, request.is_disconnected
    )
    return JSON(PopResult([record.to_task() for record in records]), headers=_lease_header(records))


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


def _lease_header(records: list[TaskRecord]) -> dict[str, str] | None:
    return {LEASE_TOKEN_HEADER: records[0].lease} if records and records[0].lease else None
