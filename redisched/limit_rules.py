"""Limits per boefje group (REDISCHED_LIMITS): which group a boefje task belongs to, and the
group's limits as the queue scripts hold them (lua/includes/common.lua).

A rule ``{"boefje": "<id or *>", "group": "<template>", "cooldown": <s>, "rate": "<N>/<s|m|h>",
"concurrency": <N>}`` (any of the last three). The first rule whose ``boefje`` matches a task
gives its group; ``{boefje_id}``, ``{organisation}``, ``{input_ooi}`` and ``{object_type}`` (the
type in the object's primary key) are filled in. A rate of N per window is enforced as a
spacing of window/N between two tasks of the group, so no window of that length ever holds
more than N; with a cooldown too the larger spacing holds.
"""

from __future__ import annotations

import logging
import math
import re
import string
from typing import Any

import msgspec

log = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_WINDOW_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
FIELDS = ("boefje_id", "organisation", "input_ooi", "object_type")
MAX_GROUP_BYTES = 512


class LimitRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    boefje: str
    group: str
    cooldown: float | None = None
    rate: str | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.cooldown is None and self.rate is None and self.concurrency is None:
            raise ValueError(f"limit rule for {self.boefje!r} sets none of cooldown, rate, concurrency")
        if self.cooldown is not None and not 0 <= self.cooldown <= 86400:
            raise ValueError("cooldown must be between 0 and 86400 seconds")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and not (_RATE.match(self.rate) and int(_RATE.match(self.rate).group(1)) > 0):
            raise ValueError(f"rate {self.rate!r} is not <N>/<s|m|h> with N > 0")
        unknown = {name for _, name, _, _ in string.Formatter().parse(self.group) if name} - set(FIELDS)
        if unknown:
            raise ValueError(f"group template {self.group!r} names {sorted(unknown)}; it may use {list(FIELDS)}")

    @property
    def spec(self) -> str:
        """"<spacing ms>,<concurrency>" as the scripts read it (0: no such limit)."""
        spacing = math.ceil((self.cooldown or 0) * 1000)
        if self.rate is not None:
            count, unit = _RATE.match(self.rate).groups()
            spacing = max(spacing, math.ceil(_WINDOW_MS[unit] / int(count)))
        return f"{spacing},{self.concurrency or 0}"


def parse_rules(raw: Any) -> tuple[LimitRule, ...]:
    """Rules from JSON text or decoded JSON; ValueError naming what is wrong."""
    if isinstance(raw, str):
        raw = msgspec.json.decode(raw or "[]")
    try:
        return tuple(msgspec.convert(raw or [], list[LimitRule]))
    except msgspec.ValidationError as exc:
        raise ValueError(f"REDISCHED_LIMITS: {exc}") from None


def group_of(rules: tuple[LimitRule, ...], organisation: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """(group, spec) of a boefje task's data, or None: no rule, or its template cannot be
    filled in (the task stays unlimited, with a warning)."""
    boefje_id = (data.get("boefje") or {}).get("id")
    rule = next((r for r in rules if r.boefje in ("*", boefje_id)), None)
    if rule is None:
        return None
    input_ooi = data.get("input_ooi")
    values = {
        "boefje_id": boefje_id,
        "organisation": organisation,
        "input_ooi": input_ooi,
        "object_type": input_ooi.split("|", 1)[0] if isinstance(input_ooi, str) and input_ooi else None,
    }
    try:
        group = rule.group.format_map({k: v for k, v in values.items() if isinstance(v, str) and v})
    except KeyError as missing:
        what = (rule.group, boefje_id, missing)
        log.warning("limit group %r of %s cannot be filled in (no %s): task left unlimited", *what)
        return None
    if "\0" in group or len(group.encode()) > MAX_GROUP_BYTES:
        log.warning("limit group %r of %s is not usable: task left unlimited", group[:80], boefje_id)
        return None
    return group, rule.spec
