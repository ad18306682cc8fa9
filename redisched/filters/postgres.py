"""A filter compiled to a Postgres WHERE condition and its parameters (``to_sql``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from redisched.filters.evaluation import _kind
from redisched.filters.nodes import (
    And, COLUMNS, FilterError, INSTANT, JOINED_SCHEDULE, LIKE_OPS, LIST_OPS, Leaf, Node, Not, Or, TEXT,
    _ASCII_LOWER, mentions_schedule,
)


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
