"""The filter language (FilterRequest): parsed once, then evaluated with one meaning in Python
(``evaluate``), in Redis (``to_lua`` + ``lua/includes/filter.lua``) and in Postgres (``to_sql``).

Semantics
- A filter reads one JSON value from a record: a column (uuid and text columns are strings,
  ``priority`` a number, ``enabled`` a bool) or, with column ``data``, the value at ``field``
  (``a__b`` = data.a.b; without ``field``, the whole object). A path walks object keys only:
  a missing key, or a step into an array or a scalar, gives null (as Postgres ``->`` does).
- Column ``schedule`` of tasks (as mula joins a task's schedule) reads the task's schedule:
  ``field`` names its column (``deadline_at``, ``enabled``, ...; none: its ``schedule``, the
  cron), ``data__a__b`` a path into its data. A filter that names it keeps only tasks whose
  schedule exists, as mula's inner join does (under ``not`` too). Listings only: a pop or
  peek cannot read schedules (400).
- Datetime columns (created_at, modified_at, deadline_at) compare as instants. Values are
  ISO-8601 strings (date-only and naive mean UTC); only equality, ordering and in/not_in apply.
- Every filter is true or false, never null and never an error, whatever the types:
  - ``eq``/``is``: deep JSON equality (types must match; 1 == 1.0; ``eq null`` = ``is_null``).
    ``ne``/``is_not`` are exactly its negation; ``in``/``not_in``: equal to some / none.
  - ``gt lt gte lte``: number with number, or string with string in code-point order (the byte
    order of UTF-8, Postgres ``COLLATE "C"``); any other pair is false.
  - ``like``/``ilike``: SQL LIKE (``%`` any run, ``_`` one character, ``\\`` escapes) on a string
    field; ``ilike`` folds ASCII letters only (Lua cannot fold more). ``not_like``/``not_ilike``:
    a string that does not match. A non-string field matches none of the four (SQL NULL logic).
  - ``contains``: a string holding the string value, or an array with an element equal to the
    value. ``starts_with``: a string with the string value as prefix.
  - ``@>``/``<@``: Postgres jsonb containment; the value is an object or array, or a JSON string
    holding one. Only on column ``data``.
- Groups: ``and`` = all hold, ``or`` = one holds, ``not`` = none holds; the keys of one group
  object must all hold; an empty group imposes nothing. Elements may nest groups.
- Numbers in filters stay within ±2^53: Lua compares doubles, Postgres numerics.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from redisched.errors import Kind, SchedulerError
from redisched.models import datetime_to_us

MAX_DEPTH = 8  # nested groups
MAX_LEAVES = 200
MAX_LIST = 1000  # items of an in/not_in value
MAX_PATH_KEYS = 16
MAX_FIELD_CHARS = 256
MAX_TEXT_CHARS = 4096  # any string in a value
MAX_VALUE_DEPTH = 16  # nesting of a JSON value
MAX_SAFE_INT = 2**53
# What a filter may cost, in the steps of ``cost`` (about 0.1 µs of Lua each on the dev machine):
# with the scan's time limit (REDISCHED_SCAN_TIME_US) they bound every pop and peek, and the
# same filters reach Postgres listings (under statement_timeout).
MAX_RECORD_COST = 3000  # each candidate
MAX_CALL_COST = 3000  # once per call

OPERATORS = {
    "==": "eq", "eq": "eq", "is": "eq",
    "!=": "ne", "ne": "ne", "is_not": "ne",
    "is_null": "is_null", "is_not_null": "is_not_null",
    ">": "gt", "gt": "gt", "<": "lt", "lt": "lt", ">=": "gte", "gte": "gte", "<=": "lte", "lte": "lte",
    "like": "like", "not_like": "not_like", "ilike": "ilike", "not_ilike": "not_ilike",
    "in": "in", "not_in": "not_in", "contains": "contains", "starts_with": "starts_with",
    "@>": "@>", "<@": "<@",
}  # fmt: skip
# mula's operator literal, in its order: anything outside it is a 422 like mula's. The ones it
# had and we lack (any, match, @?, @@) are a 400 instead.
UPSTREAM_OPERATORS = (
    "==", "eq", "!=", "ne", "is", "is_not", "is_null", "is_not_null", ">", "gt", "<", "lt", ">=",
    "gte", "<=", "lte", "like", "not_like", "ilike", "not_ilike", "in", "not_in", "contains",
    "any", "match", "starts_with", "@>", "<@", "@?", "@@",
)  # fmt: skip
LIKE_OPS = ("like", "not_like", "ilike", "not_ilike")
LIST_OPS = ("in", "not_in")
INSTANT_OPS = ("eq", "ne", "is_null", "is_not_null", "gt", "lt", "gte", "lte", "in", "not_in")

UUID, TEXT, NUMBER, BOOL, INSTANT, JSON = "uuid", "text", "number", "bool", "instant", "json"
SCHEDULE = "schedule"  # a task's schedule, joined: its columns are those of "schedules"
# The Leaf column of a filter on a task's schedule (the API's column "schedule" of tasks; a
# schedule's own "schedule" column is its cron): path = (schedule column, *keys into its data).
JOINED_SCHEDULE = "@schedule"
COLUMNS: dict[str, dict[str, str]] = {
    "tasks": {
        "id": UUID, "scheduler_id": TEXT, "schedule_id": UUID, "organisation": TEXT,
        "priority": NUMBER, "status": TEXT, "type": TEXT, "hash": TEXT, "data": JSON,
        "created_at": INSTANT, "modified_at": INSTANT, "schedule": SCHEDULE,
    },
    "schedules": {
        "id": UUID, "scheduler_id": TEXT, "organisation": TEXT, "hash": TEXT, "data": JSON,
        "enabled": BOOL, "schedule": TEXT, "deadline_at": INSTANT, "created_at": INSTANT,
        "modified_at": INSTANT,
    },
}  # fmt: skip
INSTANT_COLUMNS = frozenset(c for cols in COLUMNS.values() for c, t in cols.items() if t == INSTANT)


class FilterError(SchedulerError, ValueError):
    """An invalid FilterRequest: the API answers 400 ``Invalid filter(s): <message>``; with
    ``errors`` (an operator mula's schema refused) a 422 with them as ``detail``."""

    kind = Kind.INVALID_FILTER

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.errors = errors or []
        if self.errors:
            self.kind = Kind.INVALID_REQUEST


@dataclass(frozen=True)
class Leaf:
    column: str
    path: tuple[str, ...]  # keys into data; () = the column itself
    op: str  # canonical: eq ne gt lt gte lte like not_like ilike not_ilike in not_in contains starts_with @> <@
    value: Any  # datetime columns: µs since the epoch (or None)


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Leaf | And | Or | Not


# --- parsing ---------------------------------------------------------------------------------


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


def mentions_schedule(node: Node | None) -> bool:
    """Whether a filter reads the task's schedule (column ``schedule`` of tasks)."""
    if isinstance(node, Leaf):
        return node.column == JOINED_SCHEDULE
    if isinstance(node, Not):
        return mentions_schedule(node.child)
    return node is not None and any(mentions_schedule(child) for child in node.children)


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


# --- cost ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What a filter costs the evaluator, in steps of about 0.1 µs of Lua (more on a busy
    machine): ``per_record`` for each candidate it is evaluated on, ``per_call`` once per
    script call (decoding it, building its sets and patterns)."""

    per_record: int
    per_call: int


def cost(node: Node | None) -> Cost:
    """Every leaf costs a record 2 + the keys of its path + what its operator does: an
    ``in``/``not_in`` of scalars is one set lookup, of containers a deep comparison each; an
    equality or containment the size of its value (1 per scalar or container, 1 more per 16
    characters of a string); a LIKE pattern each of its characters; an ordering on strings 1
    per 4 characters (compared byte by byte). Groups add 1 per child. Per call, every leaf
    costs 1 + the size of its value."""
    if node is None:
        return Cost(0, 0)
    if isinstance(node, (And, Or)):
        parts = [cost(c) for c in node.children]
        return Cost(sum(1 + p.per_record for p in parts), sum(p.per_call for p in parts))
    if isinstance(node, Not):
        inner = cost(node.child)
        return Cost(1 + inner.per_record, inner.per_call)
    return Cost(2 + len(node.path) + _leaf_work(node), 1 + _value_size(node.value))


def _leaf_work(leaf: Leaf) -> int:
    if leaf.op in LIKE_OPS:
        return len(leaf.value)
    if leaf.op in LIST_OPS:
        return 1 + sum(_value_size(v) for v in leaf.value if isinstance(v, (list, dict)))
    if leaf.op in _ORDERING:
        return 1 + len(leaf.value) // 4 if isinstance(leaf.value, str) else 1
    if leaf.op in ("starts_with", "contains") and isinstance(leaf.value, str):
        return 1 + len(leaf.value) // 16
    return _value_size(leaf.value)


_ORDERING = ("gt", "lt", "gte", "lte")


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return 1 + len(value) // 16
    if isinstance(value, list):
        return 1 + sum(_value_size(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(_value_size(k) + _value_size(v) for k, v in value.items())
    return 1


def check_cost(node: Node | None) -> None:
    spent = cost(node)
    if spent.per_record > MAX_RECORD_COST:
        raise FilterError(
            f"the filter is too costly to evaluate: {spent.per_record} steps per task, at most {MAX_RECORD_COST} "
            "(each filter costs 2 + its field's keys + its value's size; LIKE patterns count per character)"
        )
    if spent.per_call > MAX_CALL_COST:
        raise FilterError(
            f"the filter is too costly to evaluate: its values hold {spent.per_call} items, at most {MAX_CALL_COST}"
        )


# --- LIKE ------------------------------------------------------------------------------------


def _like_pattern(pattern: str, where: str) -> None:
    if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
        raise FilterError(f"{where}: a LIKE pattern may not end with the escape character '\\'")


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


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --- JSON semantics (the Python reference) --------------------------------------------------


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


# --- SQL -------------------------------------------------------------------------------------


def to_sql(node: Node | None, target: str = "tasks") -> tuple[sql.Composable, list[Any]]:
    """A WHERE condition over the ``target`` table's columns and its parameters (``%s``
    placeholders, in order). The condition is never NULL, so it also composes under NOT."""
    compiler = _SqlCompiler(COLUMNS[target])
    condition = compiler.node(node)
    if target == "tasks" and mentions_schedule(node):  # mula's inner join: the schedule must exist
        condition = sql.SQL("({} AND {})").format(_SCHEDULE_EXISTS.format(sql.SQL("TRUE")), condition)
    return condition, compiler.params


# A task's schedule, correlated with the outer ``tasks`` row; inside it unqualified column
# names are the schedule's.
_SCHEDULE_EXISTS = sql.SQL("EXISTS (SELECT 1 FROM schedules AS s WHERE s.id = tasks.schedule_id AND {})")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SQL_OPS = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<="}
_LOWER_ASCII_SQL = "translate({}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"


class _SqlCompiler:
    # Placeholders are positional: every builder emits its SQL left to right, taking each
    # parameter at the point its placeholder appears.

    def __init__(self, columns: dict[str, str]):
        self.columns = columns
        self.params: list[Any] = []

    def param(self, value: Any, cast: str = "") -> sql.Composable:
        self.params.append(value)
        return sql.SQL("%s" + cast)

    def node(self, node: Node | None) -> sql.Composable:
        if node is None:
            return sql.SQL("TRUE")
        if isinstance(node, (And, Or)):
            joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
            return sql.SQL("({})").format(joiner.join(self.node(c) for c in node.children))
        if isinstance(node, Not):
            return sql.SQL("(NOT {})").format(self.node(node.child))
        return self.leaf(node)

    def leaf(self, leaf: Leaf) -> sql.Composable:
        if leaf.column == JOINED_SCHEDULE and self.columns is COLUMNS["tasks"]:
            return self.schedule(leaf)
        col_type = self.columns.get(leaf.column)
        if col_type is None:
            raise FilterError(f"unknown column {leaf.column!r}")
        if leaf.op in LIST_OPS and not leaf.value:
            return sql.SQL("FALSE" if leaf.op == "in" else "TRUE")
        if col_type == INSTANT:
            return self.instant(leaf)
        if col_type == TEXT and leaf.op in ("eq", "in") and _all_strings(leaf):
            return self.text_column(leaf)
        return self.json(leaf)

    def schedule(self, leaf: Leaf) -> sql.Composable:
        """A leaf on the task's schedule: the same leaf on the schedules row, in a subquery."""
        outer, self.columns = self.columns, COLUMNS["schedules"]
        try:
            condition = self.leaf(Leaf(leaf.path[0], leaf.path[1:], leaf.op, leaf.value))
        finally:
            self.columns = outer
        return _SCHEDULE_EXISTS.format(condition)

    def text_column(self, leaf: Leaf) -> sql.Composable:
        # Plain SQL on the column, so its btree index serves the UI's organisation/status filters.
        column = sql.Identifier(leaf.column)
        if leaf.op == "eq":
            return sql.SQL("({} = {} AND {} IS NOT NULL)").format(column, self.param(leaf.value, "::text"), column)
        values = self.param(list(leaf.value), "::text[]")
        return sql.SQL("({} = ANY({}) AND {} IS NOT NULL)").format(column, values, column)

    def instant(self, leaf: Leaf) -> sql.Composable:
        column, op, value = sql.Identifier(leaf.column), leaf.op, leaf.value
        if op in LIST_OPS:
            moments = [_us_to_datetime(v) for v in value if v is not None]
            found = sql.SQL("COALESCE({} = ANY({}), FALSE)").format(column, self.param(moments, "::timestamptz[]"))
            if None in value:
                found = sql.SQL("({} OR {} IS NULL)").format(found, column)
            return found if op == "in" else sql.SQL("(NOT {})").format(found)
        if value is None and op in ("eq", "ne"):
            return sql.SQL("({} IS NULL)" if op == "eq" else "({} IS NOT NULL)").format(column)
        if value is None:
            return sql.SQL("FALSE")
        moment = self.param(_us_to_datetime(value), "::timestamptz")
        if op == "ne":
            return sql.SQL("({} IS DISTINCT FROM {})").format(column, moment)
        return sql.SQL("COALESCE({} {} {}, FALSE)").format(column, sql.SQL(_SQL_OPS.get(op, "=")), moment)

    def field(self, leaf: Leaf) -> sql.Composable:
        """The JSON value the filter reads; never NULL (a missing value is JSON null)."""
        if leaf.column != "data":
            return sql.SQL("COALESCE(to_jsonb({}), 'null'::jsonb)").format(sql.Identifier(leaf.column))
        if not leaf.path:
            return sql.Identifier("data")
        steps = sql.SQL(" -> ").join(self.param(key, "::text") for key in leaf.path)
        return sql.SQL("COALESCE({} -> {}, 'null'::jsonb)").format(sql.Identifier("data"), steps)

    def typed(self, leaf: Leaf, kind: str) -> sql.Composable:
        return sql.SQL("jsonb_typeof({}) = '" + kind + "'").format(self.field(leaf))

    def text_of(self, leaf: Leaf) -> sql.Composable:
        return sql.SQL("({} #>> '{{}}')").format(self.field(leaf))

    def json(self, leaf: Leaf) -> sql.Composable:
        op, value = leaf.op, leaf.value
        if op in ("eq", "ne", "@>", "<@"):
            symbol = sql.SQL({"eq": "=", "ne": "<>"}.get(op, op))
            return sql.SQL("({} {} {})").format(self.field(leaf), symbol, self.param(Jsonb(value)))
        if op in LIST_OPS:
            found = sql.SQL("({} = ANY({}))").format(self.field(leaf), self.param([Jsonb(v) for v in value]))
            return found if op == "in" else sql.SQL("(NOT {})").format(found)
        if op in _SQL_OPS:
            return self.ordered(leaf)
        if op in LIKE_OPS:
            return self.like(leaf)
        if op == "starts_with":
            return sql.SQL("({} AND starts_with({}, {}))").format(
                self.typed(leaf, "string"), self.text_of(leaf), self.param(value, "::text")
            )
        return self.contains(leaf)

    def ordered(self, leaf: Leaf) -> sql.Composable:
        symbol, kind = sql.SQL(_SQL_OPS[leaf.op]), _kind(leaf.value)
        if kind == "number":
            return sql.SQL("({} AND {} {} {})").format(
                self.typed(leaf, "number"), self.field(leaf), symbol, self.param(Jsonb(leaf.value))
            )
        if kind == "string":
            return sql.SQL('({} AND {} COLLATE "C" {} {})').format(
                self.typed(leaf, "string"), self.text_of(leaf), symbol, self.param(leaf.value, "::text")
            )
        return sql.SQL("FALSE")

    def like(self, leaf: Leaf) -> sql.Composable:
        is_string = self.typed(leaf, "string")
        text, pattern = self.text_of(leaf), leaf.value
        if leaf.op in ("ilike", "not_ilike"):
            text, pattern = sql.SQL(_LOWER_ASCII_SQL).format(text), pattern.translate(_ASCII_LOWER)
        match = sql.SQL("{} LIKE {}").format(text, self.param(pattern, "::text"))
        if leaf.op.startswith("not_"):
            match = sql.SQL("NOT ({})").format(match)
        return sql.SQL("({} AND {})").format(is_string, match)

    def contains(self, leaf: Leaf) -> sql.Composable:
        # CASE, not AND: jsonb_array_elements raises on a non-array, and AND has no evaluation order.
        kind = sql.SQL("CASE jsonb_typeof({})").format(self.field(leaf))
        branches = [kind]
        if isinstance(leaf.value, str):
            text, part = self.text_of(leaf), self.param(leaf.value, "::text")
            branches.append(sql.SQL("WHEN 'string' THEN strpos({}, {}) > 0").format(text, part))
        branches.append(
            sql.SQL("WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS e(v) WHERE e.v = {})").format(
                self.field(leaf), self.param(Jsonb(leaf.value))
            )
        )
        return sql.SQL("({} ELSE FALSE END)").format(sql.SQL(" ").join(branches))


def _all_strings(leaf: Leaf) -> bool:
    values = leaf.value if leaf.op in LIST_OPS else [leaf.value]
    return all(isinstance(v, str) for v in values)


def _us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# --- Lua -------------------------------------------------------------------------------------


def to_lua(node: Node | None) -> bytes:
    """The compact JSON form ``lua/includes/filter.lua`` evaluates:

    - ``{"and": [node, ...]}``, ``{"or": [node, ...]}``, ``{"not": node}``; None → ``{"and": []}``
    - leaf ``{"op", "col", "path"?: [key, ...], "val", "exact"?: true}`` with ``op`` canonical;
      datetime values are integer µs since the epoch; ``ilike`` patterns come ASCII-lowercased;
      LIKE leaves carry ``segs``, their pattern compiled (``_like_segments``).
      ``exact`` marks a leaf that must tell ``[]`` from ``{}`` (cjson decodes both to one empty
      table): its value writes each empty array as ``[NaN]``, and Lua decodes the record the same way.
    """
    return json.dumps(_lua_node(node), ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode()


def _lua_node(node: Node | None) -> dict[str, Any]:
    if node is None:
        return {"and": []}
    if isinstance(node, And):
        return {"and": [_lua_node(c) for c in node.children]}
    if isinstance(node, Or):
        return {"or": [_lua_node(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": _lua_node(node.child)}
    if node.column == JOINED_SCHEDULE:
        raise FilterError("column 'schedule' filters task listings (/tasks) only: the queue does not hold schedules")
    leaf: dict[str, Any] = {"op": node.op, "col": node.column}
    if node.path:
        leaf["path"] = list(node.path)
    values = node.value if node.op in LIST_OPS else [node.value]
    exact = node.op in ("@>", "<@") or any(_is_container(v) for v in values)
    if exact:
        leaf["exact"] = True
        values = [_nan_for_empty_arrays(v) for v in values]
    if node.op in ("ilike", "not_ilike"):
        values = [node.value.translate(_ASCII_LOWER)]
    leaf["val"] = values if node.op in LIST_OPS else values[0]
    if node.op in LIKE_OPS:
        leaf["segs"] = _like_segments(values[0])
    return leaf


def _like_segments(pattern: str) -> list[list[Any]]:
    """A LIKE pattern compiled for filter.lua's like_match, one entry per '%'-separated
    segment: [literal, ascii pattern, runs, has '_', width in bytes]. ``literal`` is the
    segment as plain text (used when it has no '_'); the ascii pattern is a Lua pattern with
    '.' for '_' (for ASCII texts); runs are its escaped literal pieces and counts of '_'
    (Lua builds the UTF-8 form from them when a text is not ASCII)."""
    segments: list[list[Any]] = []
    runs: list[Any] = []
    plain: list[str] = []
    chars = iter(pattern)

    def close() -> None:
        ascii_pattern = "".join("." * run if isinstance(run, int) else run for run in runs)
        width = sum(run if isinstance(run, int) else len(_lua_unescaped(run).encode()) for run in runs)
        segments.append(["".join(plain), ascii_pattern, list(runs) or [""], any(isinstance(r, int) for r in runs), width])
        runs.clear()
        plain.clear()

    def literal(ch: str) -> None:
        quoted = "%" + ch if ch.isascii() and not ch.isalnum() else ch
        if runs and isinstance(runs[-1], str):
            runs[-1] += quoted
        else:
            runs.append(quoted)
        plain.append(ch)

    for ch in chars:
        if ch == "\\":
            literal(next(chars))
        elif ch == "%":
            close()
        elif ch == "_":
            if runs and isinstance(runs[-1], int):
                runs[-1] += 1
            else:
                runs.append(1)
        else:
            literal(ch)
    close()
    return segments


def _lua_unescaped(run: str) -> str:
    return re.sub(r"%(.)", r"\1", run, flags=re.DOTALL)


def _nan_for_empty_arrays(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_for_empty_arrays(v) for v in value] or [math.nan]
    if isinstance(value, dict):
        return {k: _nan_for_empty_arrays(v) for k, v in value.items()}
    return value
