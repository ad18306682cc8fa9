"""``/tasks``: listing and stats (Postgres, once it has caught up with Redis), one task, patch,
and lease extension (the use-cases across Redis and Postgres: redisched/services.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from redisched.errors import BadRequest
from redisched.models import PoppedStatus, TaskPatch, TaskStatus, with_aware_datetimes
from redisched.queue.commands import MAX_LEASE_SECONDS
from redisched.server.auth import Forbidden, role
from redisched.server.inputs import as_struct, body_with_filters, filter_body, page, path_uuid, query_enum
from redisched.server.inputs import query_float, query_int, query_range, query_text, struct_body
from redisched.server.responses import JSON, LeaseExtended, PatchedAndPopped, paginated
from redisched.server.routes.schedulers import LEASE_TOKEN_HEADER, lease_header
from redisched.server.services import services
from redisched.server.validation import InvalidRequest, missing

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
    return JSON(await services(request).get_task(path_uuid(request, "task_id")))


async def patch_task(request: Request) -> JSON:
    """Any Task field, no transition rules. A live task changes in Redis (with the token of
    the ``X-Lease-Token`` header, if sent, checked against its lease); a finished one in
    Postgres, and back to Redis when its new status is live again."""
    task_id = path_uuid(request, "task_id")
    changes = _changes(request, await struct_body(request, TaskPatch))
    token = request.headers.get(LEASE_TOKEN_HEADER)
    return JSON(await services(request).patch_task(task_id, changes, token))


async def patch_and_pop(request: Request) -> JSON:
    """Finish and fetch: ``PATCH /tasks/{id}/pop_next?limit=`` patches as ``PATCH /tasks/{id}``
    does (same body, same ``X-Lease-Token``), then pops up to ``limit`` (default 1) tasks of
    the task's queue with the body's ``filters`` (a pop's FilterRequest). With a live task and
    its pop's token that is one script call. Every input is checked first: a refused request
    patches and pops nothing. The popped tasks' lease token is in the ``X-Lease-Token`` header;
    ``?status=running`` hands them out running (pop's)."""
    task_id = path_uuid(request, "task_id")
    limit = query_int(request, "limit", 1, minimum=0)
    status = query_enum(request, "status", PoppedStatus) or "dispatched"
    document, node = await body_with_filters(request)
    changes = _changes(request, as_struct(document, TaskPatch))
    token = request.headers.get(LEASE_TOKEN_HEADER)
    task, popped = await services(request).patch_and_pop(task_id, changes, token, node, limit, status)
    return JSON(PatchedAndPopped(task, [record.to_task() for record in popped]), headers=lease_header(popped))


def _changes(request: Request, patch: TaskPatch) -> dict[str, Any]:
    """The fields a task PATCH changes; 400 when none, 403 for a runner changing more than status."""
    changes = patch.given()
    if not changes:
        raise BadRequest("no data to patch")
    if "data" in changes:
        changes["data"] = with_aware_datetimes(changes["data"])
    if role(request) == "runner" and changes.keys() - RUNNER_PATCHABLE:
        raise Forbidden()
    return changes


async def extend_lease(request: Request) -> JSON:
    """``POST /tasks/{id}/lease?seconds=`` with the pop's ``X-Lease-Token``: the lease of a
    dispatched or running task now ends ``seconds`` from now (default: the dispatch timeout)."""
    task_id = path_uuid(request, "task_id")
    token = request.headers.get(LEASE_TOKEN_HEADER)
    if not token:
        raise InvalidRequest([missing(["header", LEASE_TOKEN_HEADER.lower()])])
    default = float(services(request).settings.dispatch_timeout)
    seconds = query_float(request, "seconds", default, maximum=MAX_LEASE_SECONDS)
    return JSON(LeaseExtended(task_id, await services(request).extend_lease(task_id, token, seconds)))
