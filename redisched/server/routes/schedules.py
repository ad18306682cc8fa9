"""``/schedules``: CRUD and search, on the ScheduleStore (Postgres, mirrored in Redis). Reads
wait for the snapshotter, since pushes create schedules too."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from redisched.errors import NotFound
from redisched.models import ScheduleCreate, SchedulePatch
from redisched.server.inputs import filter_body, page, path_uuid, query_bool, query_range, query_text, struct_body
from redisched.server.responses import JSON, paginated
from redisched.server.services import services


async def list_schedules(request: Request) -> JSON:
    offset, limit = page(request)
    min_deadline_at, max_deadline_at = query_range(request, "deadline_at")
    min_created_at, max_created_at = query_range(request, "created_at")
    enabled = query_bool(request, "enabled")
    scheduler_id = query_text(request, "scheduler_id")
    organisation, schedule_hash = query_text(request, "organisation"), query_text(request, "schedule_hash")
    await services(request).history_caught_up(scheduler_id)
    count, schedules = await services(request).schedules.list(
        scheduler_id=scheduler_id,
        organisation=organisation,
        schedule_hash=schedule_hash,
        enabled=enabled,
        min_deadline_at=min_deadline_at,
        max_deadline_at=max_deadline_at,
        min_created_at=min_created_at,
        max_created_at=max_created_at,
        offset=offset,
        limit=limit,
    )
    return paginated(request, count, schedules, offset, limit)


async def search_schedules(request: Request) -> JSON:
    offset, limit = page(request)
    node = await filter_body(request, "schedules", required=True)
    await services(request).history_caught_up()
    count, schedules = await services(request).schedules.search(node, offset, limit)
    return paginated(request, count, schedules, offset, limit)


async def create_schedule(request: Request) -> JSON:
    new = await struct_body(request, ScheduleCreate)
    return JSON(await services(request).schedules.create(new), status_code=201)


async def get_schedule(request: Request) -> JSON:
    schedule_id = path_uuid(request, "schedule_id")
    await services(request).history_caught_up()
    schedule = await services(request).schedules.get(schedule_id)
    if schedule is None:
        raise _schedule_not_found(schedule_id)
    return JSON(schedule)


async def patch_schedule(request: Request) -> JSON:
    schedule_id = path_uuid(request, "schedule_id")
    changes = (await struct_body(request, SchedulePatch)).given()
    await services(request).history_caught_up()
    return JSON(await services(request).schedules.patch(schedule_id, changes))


async def delete_schedule(request: Request) -> Response:
    schedule_id = path_uuid(request, "schedule_id")
    await services(request).history_caught_up()
    live_tasks = await services(request).schedules.delete(schedule_id)
    await services(request).queues.unlink_schedule(schedule_id, live_tasks)
    return Response(status_code=204)


def _schedule_not_found(schedule_id: uuid.UUID) -> NotFound:
    return NotFound(f"schedule not found, by schedule_id: {schedule_id}")
