"""``/openapi.json`` from the route table (``server/app.py``): component schemas come from the
msgspec Structs, so the document cannot drift from what the routes decode and encode."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from redisched import __version__
from redisched.filters import UPSTREAM_OPERATORS
from redisched.server.responses import ErrorDetail, ValidationErrorDetail

FILTERS = "FilterRequest"  # marks a FilterRequest body in the route table
REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_QUERY_TYPES = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "date-time": {"type": "string", "format": "date-time"},
}
_ERRORS = {
    "400": ("Bad request, domain validation or invalid filter", ErrorDetail),
    "404": ("Not found", ErrorDetail),
    "422": ("Request validation error (FastAPI's shape)", ValidationErrorDetail),
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
        "properties": {
            "filters": {
                "anyOf": [
                    {"type": "array", "items": {"$ref": REF.format(name="Filter")}},
                    {"$ref": REF.format(name="FilterGroup")},
                ]
            }
        },
        "required": ["filters"],
    },
}


def document(api: list[Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes in ``api`` (a list of ``server.app.Api``)."""
    types = [t for route in api for t in (route.returns, route.body) if t is not None and t != FILTERS]
    types += [ErrorDetail, ValidationErrorDetail]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(repr, types), schemas))
    schema_of[repr(FILTERS)] = {"$ref": REF.format(name=FILTERS)}
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
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in _PATH_PARAM.findall(route.path)]
    parameters += [{"name": name, "in": "query", "required": False, "schema": _QUERY_TYPES[kind]} for name, kind in route.query.items()]
    ok: dict[str, Any] = {"description": "OK"}
    if route.returns is not None:
        ok["content"] = {"application/json": {"schema": schema_of[repr(route.returns)]}}
    responses = {str(route.status): ok}
    for status, (description, error_type) in _ERRORS.items():
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


SWAGGER_PAGE = """<!doctype html>
<html><head><title>redisched API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""
