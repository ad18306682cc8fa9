"""A filter in the compact JSON form ``lua/includes/filter.lua`` evaluates (``to_lua``)."""

from __future__ import annotations

import json
import math
import re
from typing import Any
from redisched.filters.evaluation import _is_container
from redisched.filters.nodes import And, FilterError, JOINED_SCHEDULE, LIKE_OPS, LIST_OPS, Node, Not, Or, _ASCII_LOWER


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
