"""A FilterRequest body → a checked tree (``parse_filter_request``): the shape, the columns
and operators, every value's type and size, its cost."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from redisched.filters.costs import check_cost
from redisched.filters.nodes import (
    And, COLUMNS, FilterError, INSTANT, INSTANT_OPS, JOINED_SCHEDULE, LIKE_OPS, LIST_OPS, Leaf, MAX_DEPTH,
    MAX_FIELD_CHARS, MAX_LEAVES, MAX_LIST, MAX_PATH_KEYS, MAX_SAFE_INT, MAX_TEXT_CHARS, MAX_VALUE_DEPTH, Node,
    Not, OPERATORS, Or, SCHEDULE, UPSTREAM_OPERATORS,
)
from redisched.models import datetime_to_us


def parse_filter_request(obj: Any, target: str = "tasks") -> Node | None:
    """A FilterRequest body (decoded JSON) → a Node, or None when it constrains nothing."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise FilterError("the body must be an object with a 'filters' key")
    filters = obj.get("filters")
    if filters is None:
        return None
    parser = _Parser(target, filters)
    if isinstance(filters, list):
        node = _all_of([parser.element(item, (i,), 1) for i, item in enumerate(filters)])
    elif isinstance(filters, dict):
        node = parser.group(filters, (), 1)
    else:
        raise FilterError("'filters' must be a list of filters or an object with 'and', 'or', 'not'")
    check_cost(node)
    return node


def _all_of(nodes: list[Node | None]) -> Node | None:
    flat = [c for n in nodes if n is not None for c in (n.children if isinstance(n, And) else (n,))]
    return None if not flat else flat[0] if len(flat) == 1 else And(tuple(flat))


def _any_of(nodes: list[Node]) -> Node:
    flat = [c for n in nodes for c in (n.children if isinstance(n, Or) else (n,))]
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _where(loc: tuple) -> str:
    return "filters" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


class _Parser:
    def __init__(self, target: str, filters: Any):
        self.target = target
        self.columns = COLUMNS[target]
        self.filters = filters
        self.leaves = 0

    def element(self, item: Any, loc: tuple, depth: int) -> Node | None:
        if isinstance(item, dict) and item.keys() & {"column", "field", "operator", "value"}:
            return self.leaf(item, loc)
        if isinstance(item, dict) and item and item.keys() <= {"and", "or", "not"}:
            return self.group(item, loc, depth + 1)
        raise FilterError(
            f"{_where(loc)}: expected a filter {{column, field?, operator, value}} or a group {{and, or, not}}"
        )

    def group(self, obj: dict, loc: tuple, depth: int) -> Node | None:
        if depth > MAX_DEPTH:
            raise FilterError(f"{_where(loc)}: groups nest deeper than {MAX_DEPTH} levels")
        unknown = sorted(str(k) for k in obj.keys() - {"and", "or", "not"})
        if unknown:
            raise FilterError(f"{_where(loc)}: unknown group key(s) {', '.join(unknown)}; use 'and', 'or', 'not'")
        parts: list[Node | None] = []
        for key in ("and", "or", "not"):
            if key not in obj:
                continue
            items = obj[key]
            if not isinstance(items, list):
                raise FilterError(f"{_where(loc + (key,))}: must be a list")
            children = [self.element(item, loc + (key, i), depth) for i, item in enumerate(items)]
            children = [c for c in children if c is not None]
            if not children:
                continue
            if key == "and":
                parts.extend(children)
            elif key == "or":
                parts.append(_any_of(children))
            else:
                parts.append(Not(_any_of(children)))
        return _all_of(parts)

    def leaf(self, obj: dict, loc: tuple) -> Leaf:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise FilterError(f"too many filters: at most {MAX_LEAVES}")
        where = _where(loc)
        raw_op = self.operator(obj, loc)
        column = obj.get("column")
        col_type = self.columns.get(column) if isinstance(column, str) else None
        if col_type is None:
            known = ", ".join(self.columns)
            raise FilterError(f"{where}: unknown column {column!r}; {self.target} columns are {known}")
        path = _path(obj.get("field"), column, where, joined=col_type == SCHEDULE)
        value_column = column  # the column whose type the value must fit
        if col_type == SCHEDULE:
            column, path = JOINED_SCHEDULE, _schedule_path(path, where)
            value_column, col_type = path[0], COLUMNS["schedules"][path[0]]
        op = OPERATORS[raw_op]
        if col_type == INSTANT and op not in INSTANT_OPS:
            raise FilterError(f"{where}: operator {raw_op!r} does not apply to datetime column {value_column!r}")
        if op in ("is_null", "is_not_null"):
            return Leaf(column, path, "eq" if op == "is_null" else "ne", None)
        if "value" not in obj:
            raise FilterError(f"{where}: 'value' is required for operator {raw_op!r}")
        value = obj["value"]
        if col_type == INSTANT:
            value = _instants(value, op, where)
        else:
            value = _checked_value(value, op, raw_op, value_column, where)
        return Leaf(column, path, op, value)

    def operator(self, obj: dict, loc: tuple) -> str:
        if "operator" not in obj:
            raise FilterError(f"{_where(loc)}: 'operator' is required")
        op = obj["operator"]
        if isinstance(op, str) and op in OPERATORS:
            return op
        if op in UPSTREAM_OPERATORS:
            raise FilterError(f"{_where(loc)}: operator {op!r} is not supported")
        raise FilterError(f"{_where(loc)}: unknown operator {op!r}", errors=self.literal_errors(op, loc))

    def literal_errors(self, op: Any, loc: tuple) -> list[dict[str, Any]]:
        """pydantic's errors for a bad operator in mula's ``list[Filter] | dict[str, list[Filter]]``."""
        expected = ", ".join(f"'{o}'" for o in UPSTREAM_OPERATORS[:-1]) + f" or '{UPSTREAM_OPERATORS[-1]}'"
        as_list = isinstance(self.filters, list)
        tag, other = ("list[Filter]", "dict[str,list[Filter]]")
        if not as_list:
            tag, other = other, tag
        sibling = {
            "type": "dict_type" if as_list else "list_type",
            "loc": ["body", "filters", other],
            "msg": f"Input should be a valid {'dictionary' if as_list else 'list'}",
            "input": self.filters,
        }
        literal = {
            "type": "literal_error",
            "loc": ["body", "filters", tag, *loc, "operator"],
            "msg": f"Input should be {expected}",
            "input": op,
            "ctx": {"expected": expected},
        }
        return [literal, sibling]


def _path(field: Any, column: str, where: str, joined: bool = False) -> tuple[str, ...]:
    if field is None or field == "":
        return ()
    if column != "data" and not joined:
        raise FilterError(f"{where}: 'field' is only allowed with columns 'data' and 'schedule'")
    if not isinstance(field, str):
        raise FilterError(f"{where}: 'field' must be a string")
    if len(field) > MAX_FIELD_CHARS:
        raise FilterError(f"{where}: 'field' is longer than {MAX_FIELD_CHARS} characters")
    _check_text(field, where)
    keys = tuple(field.split("__"))
    if len(keys) > MAX_PATH_KEYS:
        raise FilterError(f"{where}: 'field' has more than {MAX_PATH_KEYS} keys")
    if "" in keys:
        raise FilterError(f"{where}: invalid field {field!r}: keys are joined by '__' and may not be empty")
    return keys


def _schedule_path(path: tuple[str, ...], where: str) -> tuple[str, ...]:
    """(schedule column, *keys into its data); no field means the schedule's own ``schedule``
    column (its cron), as in mula."""
    path = path or ("schedule",)
    if path[0] not in COLUMNS["schedules"]:
        known = ", ".join(COLUMNS["schedules"])
        raise FilterError(f"{where}: unknown schedule field {path[0]!r}; schedule fields are {known}")
    if len(path) > 1 and path[0] != "data":
        raise FilterError(f"{where}: only the schedule's 'data' has nested fields")
    return path


def _checked_value(value: Any, op: str, raw_op: str, column: str, where: str) -> Any:
    if op in ("@>", "<@"):
        if column != "data":
            raise FilterError(f"{where}: operator {raw_op!r} only applies to column 'data'")
        return _json_container(value, raw_op, where)
    if op in LIKE_OPS or op == "starts_with":
        if not isinstance(value, str):
            raise FilterError(f"{where}: operator {raw_op!r} needs a string value")
        _check_text(value, where)
        if op in LIKE_OPS:
            _like_pattern(value, where)
        return value
    if op in LIST_OPS:
        if not isinstance(value, list):
            raise FilterError(f"{where}: operator {raw_op!r} needs a list value")
        if len(value) > MAX_LIST:
            raise FilterError(f"{where}: the list has more than {MAX_LIST} items")
    return _check_json(value, where)


def _json_container(value: Any, raw_op: str, where: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise FilterError(f"{where}: operator {raw_op!r} needs a JSON object or array, not this string") from None
    if not isinstance(value, (dict, list)):
        raise FilterError(f"{where}: operator {raw_op!r} needs a JSON object or array")
    return _check_json(value, where)


def _check_json(value: Any, where: str, depth: int = 0) -> Any:
    if depth > MAX_VALUE_DEPTH:
        raise FilterError(f"{where}: the value nests deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise FilterError(f"{where}: integers must lie within ±2^53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"{where}: numbers must be finite")
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_json(item, where, depth + 1)
    else:
        raise FilterError(f"{where}: the value is not JSON")
    return value


def _check_text(text: str, where: str) -> None:
    # Postgres text holds no NUL, and a lone surrogate has no UTF-8 form.
    if len(text) > MAX_TEXT_CHARS:
        raise FilterError(f"{where}: strings are limited to {MAX_TEXT_CHARS} characters")
    if "\x00" in text:
        raise FilterError(f"{where}: strings may not contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise FilterError(f"{where}: strings must be valid Unicode") from None


def _instants(value: Any, op: str, where: str) -> Any:
    if op not in LIST_OPS:
        return _instant(value, where)
    if not isinstance(value, list):
        raise FilterError(f"{where}: operator {op!r} needs a list value")
    if len(value) > MAX_LIST:
        raise FilterError(f"{where}: the list has more than {MAX_LIST} items")
    return [_instant(v, where) for v in value]


def _instant(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise FilterError(f"{where}: datetime columns compare with ISO-8601 strings, not {value!r}") from None
    return datetime_to_us(moment)


def _like_pattern(pattern: str, where: str) -> None:
    if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
        raise FilterError(f"{where}: a LIKE pattern may not end with the escape character '\\'")
