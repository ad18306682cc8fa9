"""``/organisations``: the fair pop's weights (read by anyone who may read, set by an admin)
and each organisation's depth and share served per queue (REDISCHED_FAIRNESS)."""

from __future__ import annotations

import math

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from redisched.queue.commands import QueueCommands
from redisched.server.inputs import json_body
from redisched.server.responses import JSON, OrganisationWeight, WeightChange
from redisched.server.services import services
from redisched.server.validation import InvalidRequest, error, from_msgspec

MAX_LISTED = 1000  # organisations listed per queue partition, least virtual time first


async def list_weights(request: Request) -> JSON:
    """The weights set; an organisation not listed weighs 1."""
    weights = await services(request).queues.weights()
    return JSON([OrganisationWeight(org, weight) for org, weight in sorted(weights.items())])


async def get_weight(request: Request) -> JSON:
    organisation = request.path_params["organisation"]
    weights = await services(request).queues.weights()
    return JSON(OrganisationWeight(organisation, weights.get(organisation, 1.0)))


async def set_weight(request: Request) -> JSON:
    organisation = request.path_params["organisation"]
    document = await json_body(request, required=True)
    try:
        change = msgspec.convert(document, WeightChange)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([from_msgspec(exc, document, WeightChange)]) from None
    if not math.isfinite(change.weight):
        raise InvalidRequest([error("finite_number", ["body", "weight"], "Input should be a finite number", change.weight)])
    await services(request).queues.set_weights({organisation: change.weight})
    return JSON(OrganisationWeight(organisation, change.weight))


async def reset_weight(request: Request) -> Response:
    await services(request).queues.reset_weight(request.path_params["organisation"])
    return Response(status_code=204)


async def shares(request: Request) -> JSON:
    """Per organisation with work or served, in this queue: depth, served, share, weight."""
    scheduler_id = request.path_params["scheduler_id"]
    QueueCommands.scheduler(scheduler_id)  # 404 when unknown
    return JSON(await services(request).queues.organisation_shares(scheduler_id, MAX_LISTED))
