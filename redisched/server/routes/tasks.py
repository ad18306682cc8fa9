"""``/tasks``: listing and stats (Postgres, once it has caught up with Redis), one task (Redis
first, then Postgres), patch, and lease extension."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from starlette.requests import Request

from redisched.errors import BadRequest, Conflict, NotFound, StaleLease
from redisched.models import LEASED, Task, TaskPatch, TaskStatus, us_to_datetime, with_aware_datetimes
from redisched.queue.commands import MAX_LEASE_SECONDS
from redisched.queue.records import record_from_task
from redisched.server.auth import Forbidden, role
from redisched.server.inputs import filter_body, page, path_uuid, query_enum, query_float, query_range
from redisched.server.inputs import query_text, struct_body
from redisched.server.responses import JSON, LeaseExtended, paginated
from redisched.server.routes.schedulers import LEASE_TOKEN_HEADER
from redisched.server.services import Services, services
from redisched.server.validation import InvalidRequest, missing

LIVE = LEASED | {"queued"}
RUNNER_PATCHABLE = frozenset({"status"})


async def list_tasks(request: Request) -> JSON:
    offset, limit = page(request)
    min_created_at, max_created_at = query_range(request, "created_at")
    status = query_enum(request, "status", TaskStatus)
    node = await filter_body(request)
    scheduler_id = query_text(request, "scheduler_id")
    organisation, task_type = query_text(request, "organisation"), query_text(request, "task_type")
    await services(request).history_caught_up(scheduler_id)
    count, tasks = await services(request).tasks.list(
        node,
        scheduler_id=scheduler_id,
        organisation=organisation,
        task_type=task_type,
        status=status,
        min_created_at=min_created_at,
        max_created_at=max_created_at,
        offset=offset,
        limit=limit,
    )
    return paginated(request, count, tasks, offset, limit)


async def task_stats(request: Request) -> JSON:
    scheduler_id, organisation_id = query_text(request, "scheduler_id"), query_text(request, "organisation_id")
    await services(request).history_caught_up(scheduler_id)
    stats = await services(request).tasks.stats(scheduler_id, organisation_id)
    return JSON(stats)


async def get_task(request: Request) -> JSON:
    task_id = path_uuid(request, "task_id")
    record = await services(request).queues.get(task_id)
    if record is not None:
        return JSON(record.to_task())
    task = await services(request).tasks.get(task_id)
    if task is None:
        raise _task_not_found(task_id)
    return JSON(task)


async def patch_task(request: Request) -> JSON:
    """Any Task field, no transition rules. A live task changes in Redis (with the token of
    the ``X-Lease-Token`` header, if sent, checked against its lease); a finished one in
    Postgres, and back to Redis when its new status is live again."""
    task_id = path_uuid(request, "task_id")
    changes = (await struct_body(request, TaskPatch)).given()
    if not changes:
        raise BadRequest("no data to patch")
    if "data" in changes:
        changes["data"] = with_aware_datetimes(changes["data"])
    if role(request) == "runner" and changes.keys() - RUNNER_PATCHABLE:
        raise Forbidden()
    queues = services(request).queues
    token = request.headers.get(LEASE_TOKEN_HEADER)
    record = await queues.patch(task_id, changes, token=token)
    if record is not None:
        return JSON(record.to_task())
    if token:  # the lease ended with the task: whoever holds this token lost it
        raise StaleLease("the lease token is not the task's current one")
    return JSON(await _patch_finished(services(request), task_id, changes))


async def extend_lease(request: Request) -> JSON:
    """``POST /tasks/{id}/lease?seconds=`` with the pop's ``X-Lease-Token``: the lease of a
    dispatched or running task now ends ``seconds`` from now (default: the dispatch timeout)."""
    task_id = path_uuid(request, "task_id")
    token = request.headers.get(LEASE_TOKEN_HEADER)
    if not token:
        raise InvalidRequest([missing(["header", LEASE_TOKEN_HEADER.lower()])])
    default = float(services(request).settings.dispatch_timeout)
    seconds = query_float(request, "seconds", default, maximum=MAX_LEASE_SECONDS)
    queues = services(request).queues
    where = await queues.locate(task_id)
    if where is None:
        raise _task_not_found(task_id)
    expires_ms = await queues.extend_lease(where.queue_id, str(task_id), token, seconds, where.partition)
    return JSON(LeaseExtended(task_id, us_to_datetime(expires_ms * 1000)))


async def _patch_finished(services: Services, task_id: uuid.UUID, changes: dict[str, Any]) -> Task:
    """Patch a task only Postgres holds; a live status puts it back in Redis first (refused
    while a twin with the same hash is queued, as for a live task)."""
    stored = await services.tasks.get(task_id)
    if stored is None:
        raise _task_not_found(task_id)
    patched = _with_changes(stored, changes)
    if patched.status.value in LIVE and not await services.queues.restore(record_from_task(patched)):
        raise Conflict("a task with the same hash is already queued")
    return await services.tasks.patch(task_id, changes)


def _with_changes(task: Task, changes: dict[str, Any]) -> Task:
    values = {name: value for name, value in changes.items() if name not in ("id", "modified_at")}
    if "data" in values:
        values["data"] = msgspec.Raw(msgspec.json.encode(values["data"]))
    return msgspec.structs.replace(task, **values)


def _task_not_found(task_id: uuid.UUID) -> NotFound:
    return NotFound(f"task not found, by task_id: {task_id}")
