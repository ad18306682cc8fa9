"""``/limits``: the limit rules per boefje group in force (REDISCHED_LIMITS at start), read
and replaced at run time (admin). A replacement reaches every API process: Redis holds the
rules, and a process pushing with older ones is sent back to read them (queue/plans.py)."""

from __future__ import annotations

from starlette.requests import Request

from redisched import limit_rules
from redisched.errors import BadRequest
from redisched.server.inputs import json_body
from redisched.server.responses import JSON, LimitRules
from redisched.server.services import services


async def get_limits(request: Request) -> JSON:
    return JSON(_answer(await services(request).queues.limit_rules()))


async def replace_limits(request: Request) -> JSON:
    """The body is the new list of rules, as REDISCHED_LIMITS takes it (``[]``: no limits)."""
    document = await json_body(request, required=True)
    if not isinstance(document, list):
        raise BadRequest("limit rules: a JSON list of rules is expected")
    try:
        rules = limit_rules.parse_rules(document, "limit rules")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return JSON(_answer(await services(request).queues.replace_limits(rules)))


def _answer(rule_set: limit_rules.RuleSet) -> LimitRules:
    return LimitRules(rules=limit_rules.as_json(rule_set.rules), version=rule_set.version, source=rule_set.source)
