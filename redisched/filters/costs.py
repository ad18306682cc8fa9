"""What a filter costs the Lua evaluator, and the limit a filter must stay under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from redisched.filters.nodes import (
    And, FilterError, LIKE_OPS, LIST_OPS, Leaf, MAX_CALL_COST, MAX_RECORD_COST, Node, Not, Or,
)


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


# Passing over one candidate, besides evaluating the filter: fetching and decoding its record
# and data (~5-15 µs on the dev machine, README "Bounds"), in the same ~0.1 µs steps.
PASS_OVER_STEPS = 100
STEPS_PER_US = 10


def indexed_scan_budget(node: Node | None, scan_budget: int, scan_time_us: int) -> int:
    """How many candidates a pop or peek may pass over in an index's slice: as many as an idle
    core passes over in ``scan_time_us`` by this cost model, at most ``scan_budget``. A count,
    not the clock, so a busy machine's pop finds what an idle one's does (DESIGN "Bounds")."""
    per_candidate = PASS_OVER_STEPS + cost(node).per_record
    return max(1, min(scan_budget, scan_time_us * STEPS_PER_US // per_candidate))


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
