"""The Python reference of a filter's meaning (``evaluate``): what Lua and SQL agree with."""

from __future__ import annotations

import enum
import functools
import re
import uuid
from datetime import datetime
from typing import Any

from redisched.filters.nodes import (
    And, INSTANT_COLUMNS, JOINED_SCHEDULE, Leaf, Node, Not, Or, _ASCII_LOWER, mentions_schedule,
)
from redisched.models import datetime_to_us


@functools.lru_cache(maxsize=256)
def _like_regexes(pattern: str) -> tuple[re.Pattern, ...]:
    """One regex per '%'-separated segment: first anchored at the start, last at the end."""
    segments, chars = [""], iter(pattern)
    for ch in chars:
        if ch == "\\":
            segments[-1] += re.escape(next(chars))
        elif ch == "%":
            segments.append("")
        else:
            segments[-1] += "." if ch == "_" else re.escape(ch)
    segments[0] = "^" + segments[0]
    segments[-1] += r"\Z"
    return tuple(re.compile(s, re.DOTALL) for s in segments)


def _like(text: str, pattern: str) -> bool:
    # Leftmost match of each segment in turn is exact for '%'-separated fixed-width segments,
    # and linear, unlike one backtracking regex.
    pos = 0
    for regex in _like_regexes(pattern):
        found = regex.search(text, pos)
        if not found:
            return False
        pos = found.end()
    return True


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _json_equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "array":
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if kind == "object":
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def _comparable(a: Any, b: Any) -> bool:
    kind = _kind(a)
    return kind == _kind(b) and kind in ("number", "string")


def _is_container(value: Any) -> bool:
    return isinstance(value, (list, dict))


def _has_element(array: list, value: Any) -> bool:
    return any(_json_equal(item, value) for item in array)


def _contains(field: Any, value: Any) -> bool:
    if isinstance(field, str):
        return isinstance(value, str) and value in field
    return isinstance(field, list) and _has_element(field, value)


def _jsonb_contains(a: Any, b: Any) -> bool:
    """Postgres ``a @> b``: at the top, an array also contains a scalar element."""
    if _is_container(a):
        if _is_container(b):
            return _deep_contains(a, b)
        return isinstance(a, list) and _has_element(a, b)
    return not _is_container(b) and _json_equal(a, b)


def _deep_contains(a: Any, b: Any) -> bool:
    if _kind(a) != _kind(b):
        return False
    if isinstance(b, dict):
        return all(key in a and _contained_value(a[key], value) for key, value in b.items())
    return all(
        any(_deep_contains(x, item) for x in a if _is_container(x)) if _is_container(item) else _has_element(a, item)
        for item in b
    )


def _contained_value(a: Any, b: Any) -> bool:
    return _deep_contains(a, b) if _is_container(b) else _json_equal(a, b)


_HOLDS = {
    "eq": _json_equal,
    "ne": lambda x, v: not _json_equal(x, v),
    "in": lambda x, vs: any(_json_equal(x, v) for v in vs),
    "not_in": lambda x, vs: not any(_json_equal(x, v) for v in vs),
    "gt": lambda x, v: _comparable(x, v) and x > v,
    "lt": lambda x, v: _comparable(x, v) and x < v,
    "gte": lambda x, v: _comparable(x, v) and x >= v,
    "lte": lambda x, v: _comparable(x, v) and x <= v,
    "like": lambda x, v: isinstance(x, str) and _like(x, v),
    "not_like": lambda x, v: isinstance(x, str) and not _like(x, v),
    "ilike": lambda x, v: isinstance(x, str) and _like(x.translate(_ASCII_LOWER), v.translate(_ASCII_LOWER)),
    "not_ilike": lambda x, v: isinstance(x, str) and not _like(x.translate(_ASCII_LOWER), v.translate(_ASCII_LOWER)),
    "contains": _contains,
    "starts_with": lambda x, v: isinstance(x, str) and x.startswith(v),
    "@>": _jsonb_contains,
    "<@": lambda x, v: _jsonb_contains(v, x),
}


def evaluate(node: Node | None, record: dict[str, Any]) -> bool:
    """Whether a task (or schedule) as the API dict, ``data`` a dict, matches ``node``; a
    task's ``schedule`` (for filters that read it) is its schedule as the API dict, or None."""
    if mentions_schedule(node) and not isinstance(record.get("schedule"), dict):
        return False  # mula's inner join
    return _holds(node, record)


def _holds(node: Node | None, record: dict[str, Any]) -> bool:
    if node is None:
        return True
    if isinstance(node, And):
        return all(_holds(c, record) for c in node.children)
    if isinstance(node, Or):
        return any(_holds(c, record) for c in node.children)
    if isinstance(node, Not):
        return not _holds(node.child, record)
    return _HOLDS[node.op](_field_value(node, record), node.value)


def _field_value(leaf: Leaf, record: dict[str, Any]) -> Any:
    column, path = leaf.column, leaf.path
    if column == JOINED_SCHEDULE:
        schedule, column, path = record.get("schedule"), path[0], path[1:]
        value = schedule.get(column) if isinstance(schedule, dict) else None
    else:
        value = record.get(column)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if column in INSTANT_COLUMNS and value is not None:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return datetime_to_us(moment)
    return value
