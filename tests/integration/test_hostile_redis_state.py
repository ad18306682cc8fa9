"""Hostile load on today's Redis structures, on private servers: the decoded-filter cache
across calls stays bounded however many distinct filters come; a runner filter naming
thousands of (boefje id, image) pairs is bounded by the pair cap; corrupt pair heads and
fair-pop weights or virtual times written by hand are healed, not a script error or a
fair order broken for good. ``pytest -s`` prints the figures (README, Hostile input)."""

from __future__ import annotations

import collections
import contextlib
import statistics

import pytest
import redis

from redisched import filters
from redisched.client import Client
from redisched.queue.indexes import PAIRS_MAX
from redisched.queue.keys import FAIR_SLICES_MAX
from redisched.queue.layout import QueueLayout
from tests.acceptance.harness import api_client, db_dsn, settings, template_db  # noqa: F401
from tests.factories import boefje_data, normalizer_data
from tests.support.servers import private_redis

CACHE_GROWTH_MAX = 8 * 2**20  # the cache keeps 256 KiB of filter text; unbounded, these filters took 47 MB


def _lua_memory(client: redis.Redis) -> int:
    return client.info("memory")["used_memory_vm_functions"]


def _cpu_us(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return (cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]) * 1e6


def test_ten_thousand_distinct_filters_keep_the_lua_filter_cache_bounded():
    def distinct(i: int) -> dict:  # 1 kB; every 20th 15 kB, just under the largest kept (16 kB)
        values = [f"zz{i}-{j:04}-" + "x" * 20 for j in range(480 if i % 20 == 0 else 30)]
        return {"filters": [{"column": "data", "field": "note", "operator": "in", "value": values}]}

    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="cache"))
        direct.load_functions()
        direct.queue("boefje").push(organisation="o", priority=1, data=boefje_data("b", oci_image="i"))
        calls = [direct.commands.pop("boefje", filters_node=filters.parse_filter_request(distinct(i)), limit=1)
                 for i in range(10_000)]  # fmt: skip
        before = peak = _lua_memory(client)
        for start in range(0, len(calls), 500):
            pipe = client.pipeline(transaction=False)
            for call in calls[start : start + 500]:
                pipe.execute_command(*call.command())
            assert all(reply == [] or reply for reply in pipe.execute())
            peak = max(peak, _lua_memory(client))
        print(f"\n10,000 distinct filters (~19 MB of filter text): Lua memory {before / 2**20:.1f} -> peak {peak / 2**20:.1f} MiB")
        assert peak - before < CACHE_GROWTH_MAX
        client.close()


def test_eight_thousand_pops_keep_the_vouched_records_bounded():
    """Each pop vouches for the record it saves (lua/includes/common.lua, vouch_for), across
    calls: at most VOUCHED_MAX of them are kept. Unbounded, these 8,000 took 2.3 MiB more."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="vouch"))
        queue = direct.queue("boefje")
        n = 8_000
        for start in range(0, n, 1_000):
            queue.push_many([dict(organisation="o", priority=i + 1, data=boefje_data(f"b{i}", oci_image="i"))
                             for i in range(start, start + 1_000)])  # fmt: skip
        assert len(queue.pop(limit=1)) == 1
        before = peak = _lua_memory(client)
        for _ in range(0, n - 1, 500):
            pipe = client.pipeline(transaction=False)
            for _ in range(500):
                pipe.execute_command(*direct.commands.pop("boefje", filters_node=None, limit=1).command())
            pipe.execute()
            peak = max(peak, _lua_memory(client))
        assert client.zcard(direct.commands.keys("boefje").queue) == 0
        print(f"\n8,000 pops: Lua memory {before / 2**20:.2f} -> peak {peak / 2**20:.2f} MiB")
        assert peak - before < 2**20
        client.close()


def _runner_filter(boefjes: list[str], images: list[str], *more: dict) -> dict:
    return {"filters": [{"column": "data", "field": "boefje__oci_image", "operator": "in", "value": images},
                        {"column": "data", "field": "boefje__id", "operator": "in", "value": boefjes}, *more]}  # fmt: skip


NEVER = {"column": "data", "field": "note", "operator": "eq", "value": "never"}


def _inner_calls(client: redis.Redis) -> collections.Counter:
    stats = client.info("commandstats")
    return collections.Counter({name[8:]: row["calls"] for name, row in stats.items() if name[8:] not in ("fcall", "info", "config|resetstat")})


@pytest.mark.parametrize(
    "tasks, wanted, ranges",
    [
        (1_000, _runner_filter([f"b{i}" for i in range(1_000)], ["img0"], NEVER), 1_000),  # one HMGET of 1,000 heads
        (1_000, _runner_filter([f"b{i}" for i in range(32)], [f"img{j}" for j in range(32)], NEVER), 32),  # the pair cap
        (1_000, _runner_filter([f"b{i}" for i in range(1_000)], [f"img{j}" for j in range(1_000)], NEVER), 1_000),  # 10^6 pairs
        (1_100, _runner_filter([f"b{i}" for i in range(1_000)], [f"img{j}" for j in range(1_000)], NEVER), 1),  # > 1,024 queued
        (1_000, {"filters": [{"column": "organisation", "operator": "in", "value": [f"o{i}" for i in range(1_000)]}, NEVER]}, 1_000),
    ],
    ids=["1000 pairs", "32x32 pairs", "a million pairs named", "past 1024 pairs queued: the queue walked", "1000 organisations"],
)
def test_a_filter_opening_a_thousand_index_slices_is_bounded(tasks, wanted, ranges):
    """Each of ``tasks`` is its own pair and organisation, named by the filter, which never
    matches: every pop passes candidates over while merging ``ranges`` slices (each step
    compares every slice's head), so the candidates it passes over are capped at 4,096 /
    slices (before: ~85 over 1,000 slices, 9-11 ms of Redis per pop)."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="pairs"))
        direct.load_functions()
        pipe = client.pipeline(transaction=False)
        for i in range(tasks):
            data = boefje_data(f"b{i}", oci_image="img0")
            pipe.execute_command(*direct.commands.push("boefje", organisation=f"o{i}", data=data, priority=10).command())
        pipe.execute()
        queue = direct.queue("boefje")
        spent, loads = [], []
        for _ in range(5):
            client.config_resetstat()
            before = _cpu_us(client)
            assert queue.pop(wanted, limit=1) == []
            spent.append(_cpu_us(client) - before)
            loads.append(_inner_calls(client)["hget"] // 2)  # a record and its data per candidate
        print(f"\n{tasks:,} tasks, {ranges:,} slices merged: {max(loads)} candidates passed over, "
              f"Redis CPU per pop {statistics.median(spent) / 1000:.2f} ms median of 5 (max {max(spent) / 1000:.2f})")  # fmt: skip
        assert max(loads) * ranges <= 4096 + ranges
        client.close()


@contextlib.contextmanager
def _fair_pairs(fairness: str, slices: int, first: str = "o"):
    """A private Redis whose boefje queue has one task in each of ``slices`` pairs, each of its
    own organisation; the first in queue order is organisation ``first``'s. Yields the
    client, the queue client and the runner filter naming the pairs."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="fairs", fairness=fairness))
        direct.load_functions()
        pipe = client.pipeline(transaction=False)
        for i in range(slices):
            data, org = boefje_data(f"b{i}", oci_image="img0"), f"o{i:05}" if i else first
            pipe.execute_command(*direct.commands.push("boefje", organisation=org, data=data, priority=10 + (i > 0)).command())
        pipe.execute()
        yield client, direct, _runner_filter([f"b{i}" for i in range(slices)], ["img0"])
        client.close()


def test_the_fair_pop_reads_each_slice_once_up_to_its_cap_then_the_plain_search_serves():
    """With fairness on, a pop over n slices reads each slice's fair listing (n commands; its
    tasks of priority <= 1 only when the queue holds one: one read tells), and each
    organisation passed over (at most 1,024 / n) opens only the slices it is listed in (one
    HMGET). Past FAIR_SLICES_MAX slices the plain search serves the pop, in queue order, at
    its cost (before: 2,023 commands, 8.1 ms of Redis for 1,000 slices)."""
    def never_matching(fairness: str, slices: int) -> tuple[int, float]:
        with _fair_pairs(fairness, slices) as (client, direct, runner):
            client.config_resetstat()
            before = _cpu_us(client)
            assert direct.queue("boefje").pop({"filters": [*runner["filters"], NEVER]}, limit=1) == []
            return sum(_inner_calls(client).values()), _cpu_us(client) - before

    (at_cap, at_cap_us), (past, past_us) = never_matching("organisation", FAIR_SLICES_MAX), never_matching("organisation", FAIR_SLICES_MAX + 1)
    plain, _ = never_matching("none", FAIR_SLICES_MAX + 1)
    print(f"\nfair pop, never matching: {FAIR_SLICES_MAX} slices {at_cap} commands ({at_cap_us / 1000:.1f} ms), "
          f"{FAIR_SLICES_MAX + 1}: {past} ({past_us / 1000:.1f} ms), without fairness {plain}")  # fmt: skip
    assert FAIR_SLICES_MAX <= at_cap <= FAIR_SLICES_MAX + 12 * 1024 // FAIR_SLICES_MAX + 60
    assert past == plain  # nothing unplaced, no fair structure read: the plain search alone

    # what is served: at the cap the fairest (all at virtual time 0: the least organisation
    # name), past it the queue's first ("z-first", priority 10 before the others' 11)
    for slices, expected in ((FAIR_SLICES_MAX, "o00001"), (FAIR_SLICES_MAX + 1, "z-first")):
        with _fair_pairs("organisation", slices, first="z-first") as (_, direct, runner):
            assert [task.organisation for task in direct.queue("boefje").pop(runner, limit=1)] == [expected], slices


def test_corrupt_pair_heads_and_members_are_healed():
    """A head naming no task (sorting past the pair's tasks), heads and members that are no
    pair's: the pop that meets them may come back empty once, moves the head back to the
    pair's best task, and every task is then popped in queue order, whatever the filter."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="junk"))
        direct.load_functions()
        queue = direct.queue("boefje")
        tasks = [queue.push(organisation="o", priority=i, data=boefje_data("b", oci_image="img")).id for i in (1, 2, 3)]
        [keys] = direct.commands.layout.of("boefje")
        [pair] = client.hkeys(keys.heads)
        client.hset(keys.heads, mapping={pair: "not an order key", "junk": "x", b"\xff\xff": ""})
        client.zadd(keys.pairs, {"no nul at all": 0, pair + b"\0garbage": 0, b"\xff": 0})
        by_pair, by_boefje = _runner_filter(["b"], ["img"]), {"filters": _runner_filter(["b", "junk"], [])["filters"][1:]}
        by_image = {"filters": _runner_filter([], ["img", "\xff"])["filters"][:1]}
        answers = [[task.id for task in queue.pop(body, limit=1)] for body in (by_pair, by_boefje, by_image, by_pair)]
        assert [found for found in answers if found] == [[task] for task in tasks]
        assert queue.pop(by_pair, limit=1) == []  # the junk member left behind met and dropped
        assert client.hget(keys.heads, pair) is None and client.zcard(keys.pairs) == 2  # the two no pair's
        client.close()


def _fair(settings):
    return settings.model_copy(update={"fairness": "organisation"})


async def test_hostile_weights_over_http_are_a_422_and_the_range_is_served(settings):
    async with api_client(_fair(settings)) as api:
        path = "/organisations/org1/weight"
        for body in (b'{"weight": NaN}', b'{"weight": Infinity}', b'{"weight": -1}', b'{"weight": 0}', b'{"weight": 5e-324}',
                     b'{"weight": 1e-7}', b'{"weight": 1000001}', b'{"weight": 1e999}', b'{"weight": "2"}', b'{"weight": true}',
                     b'{"weight": null}', b'{}', b'[1]', b'{"weight": 1, "weight": "x"}'):  # fmt: skip
            response = await api.put(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code in (400, 422), (body, response.text)
        assert (await api.get("/organisations/weights")).json() == []
        for weight in (1e-6, 1e6):
            assert (await api.put(path, json={"weight": weight})).json() == {"organisation": "org1", "weight": weight}
        many = settings.model_copy(update={"fairness": "organisation", "organisation_weights": {f"o{i}": 1 + i % 7 for i in range(10_000)}})
    async with api_client(many) as api:  # 10,000 organisations' weights from the environment
        assert len((await api.get("/organisations/weights")).json()) == 10_001  # org1 above stays: Redis holds them
        assert (await api.get("/organisations/o9999/weight")).json()["weight"] == 1 + 9999 % 7


def test_garbage_weights_and_virtual_times_in_redis_are_healed_and_the_fair_order_holds():
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="fair", fairness="organisation"))
        direct.load_functions()
        queue = direct.queue("normalizer")
        [keys] = direct.commands.layout.of("normalizer")
        garbage = {"nan": "nan", "inf": "inf", "-inf": "-inf", "tiny": "1e-320", "denormal": "5e-324", "text": "abc",
                   "hex": "0x10", "huge": "1e308", "negative": "-1", "zero": "0"}  # fmt: skip
        for org in garbage:
            for _ in range(3):
                queue.push(organisation=org, priority=5, data=normalizer_data())
        client.hset(keys.fair_key("weights"), mapping=garbage)
        client.hset(keys.fair_key("vt"), mapping={"nan": "nan", "text": "abc", "huge": "inf", "\0": "-nan"})
        served = collections.Counter(task.organisation for _ in range(40) for task in queue.pop(limit=1))
        assert served == {org: 3 for org in garbage}
        times = {field: float(value) for field, value in client.hgetall(keys.fair_key("vt")).items() if b"\0" not in field[1:]}
        assert all(0 <= vt < 1e15 for vt in times.values()), times  # before: nan and inf, for good

        client.hset(keys.fair_key("weights"), mapping={"a": "2", "b": "1"})
        for org in ("a", "b"):
            for _ in range(12):
                queue.push(organisation=org, priority=5, data=normalizer_data())
        popped = collections.Counter(task.organisation for _ in range(12) for task in queue.pop(limit=1))
        assert popped == {"a": 8, "b": 4}  # 2 : 1, as on a clean queue
        client.close()
