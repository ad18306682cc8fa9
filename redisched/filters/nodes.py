"""The filter language's vocabulary: its limits, operators and columns, the parsed tree
(``Leaf``, ``And``, ``Or``, ``Not``) and ``FilterError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redisched.errors import Kind, SchedulerError


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


def mentions_schedule(node: Node | None) -> bool:
    """Whether a filter reads the task's schedule (column ``schedule`` of tasks)."""
    if isinstance(node, Leaf):
        return node.column == JOINED_SCHEDULE
    if isinstance(node, Not):
        return mentions_schedule(node.child)
    return node is not None and any(mentions_schedule(child) for child in node.children)


# ilike folds ASCII letters only, in Python as in Lua.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
