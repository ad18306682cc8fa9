"""``/history/quarantine``: the events the snapshotter set aside because Postgres refused them
(history/quarantine.py), listed and put back (admin)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request

from redisched.history import quarantine
from redisched.queue.commands import QueueCommands
from redisched.server.inputs import json_body, query_text
from redisched.server.responses import JSON, QuarantineRetried, QuarantineRetry
from redisched.server.services import services
from redisched.server.validation import InvalidRequest, from_msgspec


async def list_quarantined(request: Request) -> JSON:
    scheduler_id = query_text(request, "scheduler_id")
    if scheduler_id is not None:
        QueueCommands.scheduler(scheduler_id)  # 404 when unknown
    svc = services(request)
    queue_ids = [scheduler_id] if scheduler_id is not None else None
    return JSON(await quarantine.listing(svc.redis, svc.queues.layout, queue_ids))


async def retry_quarantined(request: Request) -> JSON:
    document = await json_body(request, required=False)
    try:
        wanted = msgspec.convert(document or {}, QuarantineRetry)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([from_msgspec(exc, document, QuarantineRetry)]) from None
    svc = services(request)
    return JSON(QuarantineRetried(await quarantine.retry(svc.redis, svc.queues.layout, wanted.ids)))
