"""``/openapi.json`` from the route table (``server/app.py``): component schemas come from the
msgspec Structs, so the document cannot drift from what the routes decode and encode."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from redisched import __version__
from redisched.filters import UPSTREAM_OPERATORS
from redisched.models import SCHEDULERS, STATUSES, PoppedStatus
from redisched.queue.commands import MAX_LEASE_SECONDS
from redisched.server.responses import ErrorDetail, ValidationErrorDetail

FILTERS = "FilterRequest"  # marks a FilterRequest body in the route table
PATCH_AND_FILTERS = "TaskPatchAndFilters"  # marks a TaskPatch body that may carry a pop's filters
PROMETHEUS = "Prometheus"  # marks a Prometheus text response in the route table
NULL = type(None)  # a response that is JSON ``null``
LEASE_TOKEN = "X-Lease-Token"
PAYLOADS = list(dict.fromkeys(scheduler.payload for scheduler in SCHEDULERS.values()))
REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_PATH_TYPES = {
    "scheduler_id": {"type": "string", "enum": list(SCHEDULERS)},  # any other: 404
    "task_id": {"type": "string", "format": "uuid"},  # not a UUID: 422
    "schedule_id": {"type": "string", "format": "uuid"},
}
_QUERY_TYPES = {
    "integer": {"type": "integer"},
    "count": {"type": "integer", "minimum": 0},  # negative: 422
    "number": {"type": "number"},
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "date-time": {"type": "string", "format": "date-time"},
    "status": {"type": "string", "enum": STATUSES},
    "popped-status": {"type": "string", "enum": [status.value for status in PoppedStatus]},
    "lease-seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LEASE_SECONDS},  # ≤ 0: 400, more: 422
}
_ERRORS = {
    "400": ("Bad request, domain validation or invalid filter", ErrorDetail),
    "404": ("Not found", ErrorDetail),
    "422": ("Request validation error (FastAPI's shape)", ValidationErrorDetail),
    "503": ("Redis or Postgres did not answer in time (Retry-After)", ErrorDetail),
}
_AUTH_ERRORS = {
    "401": ("Not authenticated (only when bearer tokens are configured)", ErrorDetail),
    "403": ("Not enough permissions (a runner token on an admin route)", ErrorDetail),
}
_BODY_ERRORS = {"413": ("Request body too large (REDISCHED_MAX_BODY_BYTES)", ErrorDetail)}
_ROUTE_ERRORS = {
    409: "Conflict: a live task with this id or hash, a stale lease token, or a schedule with this hash",
    429: "Queue full (SCHEDULER_PQ_MAXSIZE)",
}
_LEASE_TOKEN_DESCRIPTION = "the pop's lease token: checked against the task's current lease (409 when stale)"

_FILTERS_PROPERTY = {
    "anyOf": [
        {"type": "array", "items": {"$ref": REF.format(name="Filter")}},
        {"$ref": REF.format(name="FilterGroup")},
    ]
}
FILTER_SCHEMAS: dict[str, Any] = {
    "Filter": {
        "type": "object",
        "properties": {
            "column": {"type": "string"},
            "field": {"type": "string", "description": "path into data, keys joined by '__'"},
            "operator": {"type": "string", "enum": list(UPSTREAM_OPERATORS)},
            "value": {},
        },
        "required": ["column", "operator"],
    },
    "FilterGroup": {
        "type": "object",
        "properties": {
            key: {"type": "array", "items": {"anyOf": [{"$ref": REF.format(name="Filter")}, {"$ref": REF.format(name="FilterGroup")}]}}
            for key in ("and", "or", "not")
        },
    },
    "FilterRequest": {
        "type": "object",
        "properties": {"filters": _FILTERS_PROPERTY},
        "required": ["filters"],
    },
    PATCH_AND_FILTERS: {
        "description": "a task PATCH's fields, and the next pop's filters (as a FilterRequest's)",
        "allOf": [{"$ref": REF.format(name="TaskPatch")}, {"type": "object", "properties": {"filters": _FILTERS_PROPERTY}}],
    },
}


def document(api: list[Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes in ``api`` (a list of ``server.app.Api``)."""
    types = [t for route in api for t in (route.returns, route.body) if t is not None and t not in (FILTERS, PATCH_AND_FILTERS)]
    types = [t for t in types if t != PROMETHEUS] + [ErrorDetail, ValidationErrorDetail, *PAYLOADS]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    _mark_datetimes(types, components)
    _refine_pushes(components)
    schema_of = dict(zip(map(repr, types), schemas))
    schema_of[repr(FILTERS)] = {"$ref": REF.format(name=FILTERS)}
    schema_of[repr(PATCH_AND_FILTERS)] = {"$ref": REF.format(name=PATCH_AND_FILTERS)}
    paths: dict[str, dict[str, Any]] = {}
    for route in api:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "redisched", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {**components, **FILTER_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: Any, schema_of: dict[str, Any]) -> dict[str, Any]:
    parameters = [{"name": name, "in": "path", "required": True, "schema": _PATH_TYPES.get(name, {"type": "string"})}
                  for name in _PATH_PARAM.findall(route.path)]  # fmt: skip
    parameters += [{"name": name, "in": "query", "required": False, "schema": _QUERY_TYPES[kind]} for name, kind in route.query.items()]
    uses = route.lease_token.split()
    if "optional" in uses or "required" in uses:
        parameters.append({"name": LEASE_TOKEN, "in": "header", "required": "required" in uses,
                           "description": _LEASE_TOKEN_DESCRIPTION, "schema": {"type": "string"}})  # fmt: skip
    ok: dict[str, Any] = {"description": "OK"}
    if route.returns == PROMETHEUS:
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    elif route.returns is not None:
        ok["content"] = {"application/json": {"schema": schema_of[repr(route.returns)]}}
    if "returned" in uses:
        ok["headers"] = {LEASE_TOKEN: {"description": "the popped tasks' lease token (absent when none was popped)",
                                       "schema": {"type": "string"}}}  # fmt: skip
    errors = dict(_ERRORS)
    if route.role != "public":
        errors |= _AUTH_ERRORS
    if route.body is not None:
        errors |= _BODY_ERRORS
    errors |= {str(status): (_ROUTE_ERRORS[status], ErrorDetail) for status in route.errors}
    responses = {str(route.status): ok}
    for status, (description, error_type) in sorted(errors.items()):
        responses[status] = {"description": description, "content": {"application/json": {"schema": schema_of[repr(error_type)]}}}
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.endpoint.__name__ + "_" + route.method.lower(),
        "parameters": parameters,
        "responses": responses,
    }
    if route.role != "public":
        operation["security"] = [{"bearer": []}, {}]
    if route.body is not None:
        content = {"application/json": {"schema": schema_of[repr(route.body)]}}
        operation["requestBody"] = {"required": route.body_required, "content": content}
    return operation


def _refine_pushes(components: dict[str, Any]) -> None:
    """What the push and schedule-create Structs leave to the queue's checks (each a 400)."""
    payload = {
        "description": "the scheduler's payload: a BoefjeTask, NormalizerTask or ReportTask",
        "anyOf": [{"$ref": REF.format(name=payload.__name__)} for payload in PAYLOADS],
    }
    if push := components.get("TaskPush"):
        push["properties"]["data"] = payload
        push["properties"]["priority"] = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1, "not": {"const": 0}}
        push["properties"]["scheduler_id"]["description"] = "the path's, if given"
        push["required"] = [*push["required"], "priority"]
    if create := components.get("ScheduleCreate"):
        create["properties"]["data"] = payload
        create["properties"]["scheduler_id"] = {"type": "string", "enum": list(SCHEDULERS)}
        create["description"] = "deadline_at or schedule (a cron expression) must be given"
        create["anyOf"] = [{"required": [name], "properties": {name: {"type": "string"}}} for name in ("deadline_at", "schedule")]


def _mark_datetimes(types: list[Any], components: dict[str, Any]) -> None:
    """msgspec documents an aware-or-naive ``datetime`` as a bare string: say ``date-time``
    (the API answers RFC 3339 and reads any ISO 8601, naive meaning UTC)."""
    for struct in _structs(types):
        schema = components.get(getattr(struct, "__name__", ""))
        if schema is None:
            continue
        for field in msgspec.inspect.type_info(struct).fields:
            kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
            if any(isinstance(kind, msgspec.inspect.DateTimeType) for kind in kinds):
                prop = schema["properties"][field.encode_name]
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "string":
                        option["format"] = "date-time"


def _structs(types: list[Any]) -> list[type]:
    """The Struct types ``types`` mention (fields and containers followed)."""
    found: dict[type, None] = {}

    def visit(kind: Any) -> None:
        if isinstance(kind, msgspec.inspect.StructType):
            if kind.cls in found:
                return
            found[kind.cls] = None
            for field in kind.fields:
                visit(field.type)
        elif isinstance(kind, msgspec.inspect.UnionType):
            for option in kind.types:
                visit(option)
        elif isinstance(kind, msgspec.inspect.CollectionType):
            visit(kind.item_type)
        elif isinstance(kind, msgspec.inspect.DictType):
            visit(kind.value_type)

    for kind in msgspec.inspect.multi_type_info(types):
        visit(kind)
    return list(found)
