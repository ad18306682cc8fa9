"""Hostile limit rules (PUT /limits), hostile objects filling their group templates, and
corrupt limit state in Redis: a clear 400, or a state the scripts heal; never a crash, a
push that fails for every task, or a template that allocates a gigabyte per push."""

from __future__ import annotations

import json
import time

import pytest
import redis

from redisched import limit_rules
from redisched.queue.layout import QueueLayout
from tests.acceptance.harness import api, boefje_push, db_dsn, settings, template_db  # noqa: F401


def rule(group: str = "g", boefje: str = "*", **limits) -> dict:
    return {"boefje": boefje, "group": group, **(limits or {"cooldown": 60})}


async def put(api, rules) -> tuple[int, str]:
    response = await api.put("/limits", json=rules)
    return response.status_code, response.text


async def push(api, ooi: str, boefje_id: str = "dns-records") -> int:
    response = await api.post("/schedulers/boefje/push", json=boefje_push(ooi, boefje_id=boefje_id))
    return response.status_code


async def pop_ids(api, limit: int = 10) -> list[str]:
    return [task["id"] for task in (await api.post(f"/schedulers/boefje/pop?limit={limit}")).json()["results"]]


async def test_the_most_rules_and_longest_templates_allowed_and_one_past(api):
    longest = "x" * (limit_rules.MAX_GROUP_BYTES - len("{input_ooi}")) + "{input_ooi}"
    most = [rule(longest, boefje=f"b{i:04}" + "i" * (limit_rules.MAX_BOEFJE_BYTES - 5)) for i in range(limit_rules.MAX_RULES)]
    most[-1] = rule("{organisation}", concurrency=limit_rules.MAX_CONCURRENCY)
    started = time.perf_counter()
    status, text = await put(api, most)
    took = time.perf_counter() - started
    assert status == 200, text
    print(f"\nPUT /limits of {len(most)} rules ({len(json.dumps(most)) / 1e6:.1f} MB): {took * 1000:.0f} ms")
    version = (await api.get("/limits")).json()["version"]

    past = [
        ("rules", most + [rule()]),
        ("rules", [rule()] * (limit_rules.MAX_RULES + 1)),
        ("bytes", [rule("x" * (limit_rules.MAX_GROUP_BYTES + 1))]),
        ("bytes", [rule("é" * (limit_rules.MAX_GROUP_BYTES // 2) + "x")]),  # 513 bytes of UTF-8
        ("bytes", [rule(boefje="b" * (limit_rules.MAX_BOEFJE_BYTES + 1))]),
        ("bytes", [rule("a\u0000b")]),
        ("bytes", [rule(boefje="a\u0000b")]),
        ("concurrency", [rule(concurrency=limit_rules.MAX_CONCURRENCY + 1)]),
        ("concurrency", [rule(concurrency=10**30)]),
        ("rate", [rule(rate="1" * 13 + "/s")]),
        ("rate", [rule(rate="\u0661/s")]),  # an Arabic-Indic digit
    ]
    for why, rules in past:
        status, text = await put(api, rules)
        assert status == 400 and why in text, (why, text[:300])
    assert (await api.get("/limits")).json()["version"] == version  # nothing replaced
    assert await push(api, "Hostname|internet|a.example") == 201


@pytest.mark.parametrize(
    "template",
    [
        "{organisation:>1000000000}",  # a gigabyte of padding on every push
        "{organisation:d}",  # a ValueError on every push
        "{organisation!r}",
        "{organisation:{boefje_id}}",
        "{}",
        "{0}",
        "{organisation[0]}",
        "{organisation.__class__}",
        "{",
        "}",
    ],
)
async def test_a_template_is_plain_fields_or_refused(api, template):
    status, text = await put(api, [rule(template)])
    assert status == 400 and "group template" in text or "format string" in text, text
    assert (await api.get("/limits")).json()["rules"] == []
    assert await push(api, "Hostname|internet|a.example") == 201


async def test_group_templates_filled_from_hostile_objects(api):
    assert (await put(api, [rule("g:{input_ooi}", cooldown=60)]))[0] == 200
    braces = "Hostname|internet|{organisation}{}{0}{{%s}}%d+.-[^]"
    assert await push(api, braces, "a") == 201 and await push(api, braces, "b") == 201
    # one group, its name the object's text, held by its cooldown
    assert [len(await pop_ids(api)) for _ in range(2)] == [1, 0]

    too_long = "Hostname|internet|" + "h" * (limit_rules.MAX_GROUP_BYTES)  # its group is past 512 bytes
    assert await push(api, too_long, "a") == 201 and await push(api, too_long, "b") == 201
    assert [len(await pop_ids(api)) for _ in range(2)] == [1, 1]  # unlimited, with a warning, not refused

    assert await push(api, "Hostname|internet|a\u0000b") == 400  # the push's own check
    huge = boefje_push("Hostname|internet|big.example") | {}
    huge["data"]["note"] = "{input_ooi}" * 90_000  # ~1 MiB beside the object: not a template
    response = await api.post("/schedulers/boefje/push", json=huge)
    assert response.status_code == 201, response.text[:200]


async def test_corrupt_limit_state_is_healed_not_an_error_on_every_call(api, settings):
    sampler = redis.Redis.from_url(settings.redis_url)
    [keys] = QueueLayout(prefix=settings.key_prefix).of("boefje")
    rules_key = limit_rules_key = f"{settings.key_prefix}:limits:rules"
    assert (await put(api, [rule("g", cooldown=0.01, concurrency=5)]))[0] == 200
    assert await push(api, "Hostname|internet|a.example") == 201
    [leased] = await pop_ids(api)
    # garbage where the scripts keep numbers and lists
    sampler.hset(keys.limits, mapping={"g\0n": "many", "g\0last": "yesterday", "\0version": "v2", "\0rules": "{not json"})
    sampler.hset(rules_key, mapping={"version": "soon", "rules": "[{\"boefje\": 1}]"})

    assert (await api.get("/limits")).status_code == 200
    assert (await api.patch(f"/tasks/{leased}", json={"status": "completed"})).status_code == 200
    assert await push(api, "Hostname|internet|b.example") == 201
    assert len(await pop_ids(api)) == 1
    status, text = await put(api, [rule("g", cooldown=0.01)])
    assert status == 200, text
    healed = sampler.hgetall(limit_rules_key)
    assert healed[b"version"].isdigit() and json.loads(healed[b"rules"])[0]["group"] == "g"
    assert sampler.hget(keys.limits, "\0version").isdigit()
    assert await push(api, "Hostname|internet|c.example") == 201
    sampler.close()


async def test_a_long_poll_is_not_spun_by_reopenings_written_by_hand(api, settings):
    """Groups due long ago that hold nothing, a score of -inf, a name of no group in the
    partition's reopenings (limwake): the first pop clears the due ones, and the poll then
    blocks on the queue's events instead of retrying every 5 ms for its whole wait."""
    sampler = redis.Redis.from_url(settings.redis_url)
    [keys] = QueueLayout(prefix=settings.key_prefix).of("boefje")
    assert (await put(api, [rule("g:{input_ooi}", cooldown=60)]))[0] == 200
    sampler.zadd(keys.limwake, {f"junk{i}": 0 for i in range(150)} | {"\0": float("-inf"), "{[%": 1})
    queues, pops = api.services.queues, []
    pop = queues.pop

    async def counted(*args, **kwargs):
        pops.append(1)
        return await pop(*args, **kwargs)

    queues.pop = counted
    started = time.monotonic()
    response = await api.post("/schedulers/boefje/pop", params={"wait": 1})
    waited = time.monotonic() - started
    queues.pop = pop
    assert response.json() == {"results": []} and waited >= 0.9
    print(f"\n{len(pops)} pops in a 1 s poll")
    assert len(pops) <= 6, len(pops)  # 3 here; spinning on them, 12 or more
    assert sampler.zcard(keys.limwake) == 0
    sampler.close()
