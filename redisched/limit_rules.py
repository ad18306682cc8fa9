"""Limits per boefje group (REDISCHED_LIMITS): which group a boefje task belongs to, and the
group's limits as the queue scripts hold them (lua/includes/common.lua).

A rule ``{"boefje": "<id or *>", "group": "<template>", "cooldown": <s>, "rate": "<N>/<s|m|h>",
"concurrency": <N>}`` (any of the last three). The first rule whose ``boefje`` matches a task
gives its group; ``{boefje_id}``, ``{organisation}``, ``{input_ooi}`` and ``{object_type}`` (the
type in the object's primary key) are filled in. A rate of N per window is enforced as a
spacing of window/N between two tasks of the group, so no window of that length ever holds
more than N; with a cooldown too the larger spacing holds.

The rules in force are a ``RuleSet``: the rules and their version (Redis's clock in µs when
they were set). Redis holds the current set (``<p>:limits:rules``, queue/plans.py); each queue
partition holds the version it follows and each rule's spec under the rule's key, and each
group names its rule's key, so a replaced rule's limits reach its groups at once.
"""

from __future__ import annotations

import logging
import math
import re
import string
from typing import Any

import msgspec

log = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*([0-9]{1,12})\s*/\s*([smh])\s*$")
_WINDOW_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
FIELDS = ("boefje_id", "organisation", "input_ooi", "object_type")
MAX_GROUP_BYTES = 512  # a filled-in group, and a template
MAX_BOEFJE_BYTES = 256  # with MAX_RULES and the template's cap: the most rules fit the 1 MiB body
MAX_RULES = 1000  # each a few Redis writes in rules.lua and a test per boefje push
MAX_CONCURRENCY = 1_000_000


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
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if self.rate is not None and not (_RATE.match(self.rate) and int(_RATE.match(self.rate).group(1)) > 0):
            raise ValueError(f"rate {self.rate!r} is not <N>/<s|m|h> with 0 < N < 10^12")
        for what, text, most in (("boefje", self.boefje, MAX_BOEFJE_BYTES), ("group template", self.group, MAX_GROUP_BYTES)):
            if "\0" in text or len(text.encode(errors="replace")) > most:
                raise ValueError(f"{what} must be at most {most} bytes (UTF-8), without NUL")
        # Plain {field}s only: a format spec ({organisation:>999999999}) or a conversion would
        # be run on every push (a padding of a GB, or a ValueError then).
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(self.group)]
        unknown = sorted({name for name, _, _ in fields if name is not None} - set(FIELDS))
        if unknown:
            raise ValueError(f"group template {self.group!r} names {unknown}; it may use {list(FIELDS)}")
        if any(spec or conversion for name, spec, conversion in fields if name is not None):
            raise ValueError(f"group template {self.group!r}: only plain {{field}}s, no format spec or conversion")

    @property
    def key(self) -> str:
        """What names the rule in the scripts: its boefje and its template (a rule replaced
        with the same two keeps its groups; one with another template makes new groups)."""
        return f"{self.boefje}\0{self.group}"

    @property
    def spec(self) -> str:
        """"<spacing ms>,<concurrency>" as the scripts read it (0: no such limit)."""
        spacing = math.ceil((self.cooldown or 0) * 1000)
        if self.rate is not None:
            count, unit = _RATE.match(self.rate).groups()
            spacing = max(spacing, math.ceil(_WINDOW_MS[unit] / int(count)))
        return f"{spacing},{self.concurrency or 0}"


def parse_rules(raw: Any, what: str = "REDISCHED_LIMITS") -> tuple[LimitRule, ...]:
    """Rules from JSON text or decoded JSON; ValueError naming what is wrong."""
    try:
        if isinstance(raw, (str, bytes)):
            raw = msgspec.json.decode(raw or "[]")
        if isinstance(raw, list) and len(raw) > MAX_RULES:
            raise ValueError(f"{what}: at most {MAX_RULES} rules, got {len(raw)}")
        return tuple(msgspec.convert(raw or [], list[LimitRule]))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def as_json(rules: tuple[LimitRule, ...]) -> list[dict[str, Any]]:
    """The rules as a JSON list, each without the limits it does not set."""
    return [{k: v for k, v in msgspec.structs.asdict(rule).items() if v is not None} for rule in rules]


class RuleSet(msgspec.Struct, frozen=True):
    """The rules in force and their version ("0": not read from Redis yet); ``source``:
    "env" (REDISCHED_LIMITS at start) or "admin" (PUT /limits)."""

    rules: tuple[LimitRule, ...] = ()
    version: str = "0"
    source: str = "env"

    @classmethod
    def stored(cls, version: bytes | str, rules: bytes | str, source: bytes | str) -> RuleSet:
        """As Redis holds them (the fields of <p>:limits:rules)."""
        text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
        if not text(version or "").isdigit():
            raise ValueError(f"stored limit rules: version {version!r:.40} is not a number")
        return cls(parse_rules(rules, "stored limit rules"), text(version), text(source or "env"))

    @property
    def specs(self) -> dict[str, str]:
        """Each rule's spec by its key (the first rule of a key wins, as it does for a task)."""
        specs: dict[str, str] = {}
        for rule in self.rules:
            specs.setdefault(rule.key, rule.spec)
        return specs


class RulesInForce:
    """The rule set one process pushes with, moved on by each newer one it reads."""

    def __init__(self, rules: tuple[LimitRule, ...] = ()) -> None:
        self.current = RuleSet(rules)

    def adopt(self, newer: RuleSet) -> None:
        if int(newer.version) >= int(self.current.version):
            self.current = newer


class TaskGroup(msgspec.Struct, frozen=True):
    """The limit group a task falls in, and the rule that puts it there."""

    name: str
    rule: LimitRule


def group_of(
    rules: tuple[LimitRule, ...], organisation: str, data: dict[str, Any], plugin_rule: LimitRule | None = None
) -> TaskGroup | None:
    """The limit group of a boefje task's data, or None: no rule, or its template cannot be
    filled in (the task stays unlimited, with a warning). A rule naming the boefje beats the
    plugin's own rate-limit group (``plugin_rule``, from Katalogus), which beats a ``*`` rule;
    among rules of one kind the first wins."""
    boefje_id = (data.get("boefje") or {}).get("id")
    rule = next((r for r in rules if r.boefje == boefje_id), None) or plugin_rule
    rule = rule or next((r for r in rules if r.boefje == "*"), None)
    if rule is None:
        return None
    return fill_in(rule, organisation, data)


def plugin_rule(plugin_id: str, group: str | None, interval: float | None) -> LimitRule | None:
    """The cooldown rule a boefje's Katalogus manifest asks for (``rate_limit_group`` and
    ``rate_limit_interval`` in seconds), or None: none asked, or not usable (with a warning).
    Its key is its own (``katalogus:<id>``), so it never shares a spec with an operator's rule."""
    if not group or not interval:
        return None
    try:
        if not isinstance(group, str) or isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise ValueError(f"a string group and a number of seconds expected, got {group!r:.80} and {interval!r:.80}")
        return LimitRule(boefje=f"katalogus:{plugin_id}", group=group, cooldown=interval)
    except ValueError as exc:
        log.warning("rate-limit group of plugin %s not usable, its tasks left unlimited: %s", plugin_id, exc)
        return None


def fill_in(rule: LimitRule, organisation: str, data: dict[str, Any]) -> TaskGroup | None:
    """The group ``rule`` names for this task, or None when its template cannot be filled in."""
    boefje_id = (data.get("boefje") or {}).get("id")
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
    return TaskGroup(group, rule)
