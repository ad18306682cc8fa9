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

Modules: ``nodes`` (limits, operators, columns, the tree, ``FilterError``), ``parse``
(body → tree, every check), ``costs`` (what a tree costs the evaluator), ``evaluation`` (the
Python reference), ``postgres`` (``to_sql``), ``lua`` (``to_lua``).
"""

from redisched.filters.costs import Cost, check_cost, cost, indexed_scan_budget
from redisched.filters.evaluation import evaluate
from redisched.filters.lua import to_lua
from redisched.filters.nodes import (
    BOOL, COLUMNS, INSTANT, INSTANT_COLUMNS, INSTANT_OPS, JOINED_SCHEDULE, JSON, LIKE_OPS, LIST_OPS,
    MAX_CALL_COST, MAX_DEPTH, MAX_FIELD_CHARS, MAX_LEAVES, MAX_LIST, MAX_PATH_KEYS, MAX_RECORD_COST,
    MAX_SAFE_INT, MAX_TEXT_CHARS, MAX_VALUE_DEPTH, NUMBER, OPERATORS, SCHEDULE, TEXT, UPSTREAM_OPERATORS,
    UUID, And, FilterError, Leaf, Node, Not, Or, mentions_schedule,
)
from redisched.filters.parse import parse_filter_request
from redisched.filters.postgres import to_sql

__all__ = [
    "BOOL", "COLUMNS", "INSTANT", "INSTANT_COLUMNS", "INSTANT_OPS", "JOINED_SCHEDULE", "JSON", "LIKE_OPS",
    "LIST_OPS", "MAX_CALL_COST", "MAX_DEPTH", "MAX_FIELD_CHARS", "MAX_LEAVES", "MAX_LIST", "MAX_PATH_KEYS",
    "MAX_RECORD_COST", "MAX_SAFE_INT", "MAX_TEXT_CHARS", "MAX_VALUE_DEPTH", "NUMBER", "OPERATORS",
    "SCHEDULE", "TEXT", "UPSTREAM_OPERATORS", "UUID", "And", "Cost", "FilterError", "Leaf", "Node", "Not",
    "Or", "check_cost", "cost", "evaluate", "indexed_scan_budget", "mentions_schedule", "parse_filter_request", "to_lua", "to_sql",
]  # fmt: skip
