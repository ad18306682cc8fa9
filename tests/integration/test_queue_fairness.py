"""The fair pop across organisations (REDISCHED_FAIRNESS=organisation), in the queue scripts:
the organisation furthest behind its weighted share goes next, a person's scan (priority
<= 1) passes fairness, and it composes with the runners' filters, the boefje dedup batches
and limits. Fairness holds per partition, so on the partitioned backend the tasks of a test
are chosen to share one partition (as the limits tests do)."""

from __future__ import annotations

import asyncio
import collections
import itertools

import pytest

from redisched.limit_rules import parse_rules
from redisched.models import check_pushed_payload
from redisched.queue.keys import partition_of
from tests.factories import boefje_data, normalizer_data

_seq = itertools.count()
KEY_A, KEY_B = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


def in_partition_0(queues, n: int, organization: str, boefje_id: str = "dns-records", **extra) -> list[dict]:
    """n boefje payloads of this organisation whose hashes fall in partition 0."""
    found = []
    while len(found) < n:
        data = boefje_data(boefje_id, ooi=f"Hostname|internet|f{next(_seq)}.example", organization=organization, **extra)
        if partition_of(check_pushed_payload("boefje", data).hash(), queues.layout.partitions) == 0:
            found.append(data)
    return found


async def push_boefjes(queues, organization: str, n: int, priority: int, **extra) -> None:
    for data in in_partition_0(queues, n, organization, **extra):
        await queues.push("boefje", organisation=organization, data=data, priority=priority)


async def pop_orgs(queues, n: int, filters=None) -> list[str]:
    orgs = []
    for _ in range(n):
        popped = await queues.pop("boefje", filters, limit=1)
        orgs += [record.organisation for record in popped]
    return orgs


def boefje_filter(*ids: str) -> dict:
    return {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": list(ids)}]}


async def test_each_organisation_gets_its_weighted_share_whatever_its_backlog_and_priority(make_queues):
    queues = make_queues(fairness="organisation")
    await queues.set_weights({"big": 1, "mid": 2})
    await push_boefjes(queues, "big", 60, priority=5)  # better priority, the deepest backlog
    await push_boefjes(queues, "mid", 30, priority=50)
    await push_boefjes(queues, "small", 30, priority=90)
    first = await pop_orgs(queues, 40)
    counts = collections.Counter(first)
    assert counts == {"mid": 20, "big": 10, "small": 10}, counts  # weights 1 : 2 : 1
    assert "small" in first[:4] and "mid" in first[:4]
    # within an organisation: (priority, created_at) as without fairness
    [big] = [r for r in await queues.peek("boefje", limit=200) if r.organisation == "big"][:1]
    popped = await queues.pop("boefje", {"filters": [{"column": "organisation", "operator": "eq", "value": "big"}]}, limit=1)
    assert popped[0].id == big.id


async def test_without_fairness_the_order_is_mulas(make_queues, backend_redis):
    queues = make_queues()
    await push_boefjes(queues, "big", 20, priority=5)
    await push_boefjes(queues, "small", 5, priority=90)
    assert await pop_orgs(queues, 25) == ["big"] * 20 + ["small"] * 5
    assert not await backend_redis.exists(queues.commands.keys("boefje").fair_key("tasks"))


async def test_a_persons_scan_passes_fairness(make_queues):
    queues = make_queues(fairness="organisation")
    await push_boefjes(queues, "a", 10, priority=50)
    await push_boefjes(queues, "b", 10, priority=50)
    await queues.set_weights({"a": 100})
    assert collections.Counter(await pop_orgs(queues, 6)) == {"a": 5, "b": 1}  # b is far ahead of a now
    await push_boefjes(queues, "b", 3, priority=1)  # b's manual scans go first all the same
    popped = [(await queues.pop("boefje", limit=1))[0] for _ in range(3)]
    assert [(r.organisation, r.priority) for r in popped] == [("b", "1")] * 3
    await queues.set_weights({"a": 1})
    assert collections.Counter(await pop_orgs(queues, 2)) == {"a": 1, "b": 1}  # not charged against b


async def test_a_persons_scan_passes_fairness_through_a_runners_slices(make_queues):
    """A pop over several slices reads them for a person's scans only while the queue holds
    one (fair.lua): one outside the filter does not stop the fair choice, one inside goes first."""
    queues = make_queues(fairness="organisation")
    runner = boefje_filter("dns-records", "nmap")
    await push_boefjes(queues, "a", 10, priority=50, boefje_id="dns-records")
    await push_boefjes(queues, "b", 10, priority=50, boefje_id="nmap")
    await queues.set_weights({"a": 100})
    assert collections.Counter(await pop_orgs(queues, 6, runner)) == {"a": 5, "b": 1}
    await push_boefjes(queues, "c", 1, priority=1, boefje_id="other")  # not the runner's
    assert await pop_orgs(queues, 2, runner) == ["a", "a"]
    await push_boefjes(queues, "b", 2, priority=1, boefje_id="nmap")
    popped = [(await queues.pop("boefje", runner, limit=1))[0] for _ in range(3)]
    assert [(r.organisation, r.priority) for r in popped] == [("b", "1"), ("b", "1"), ("a", "50")]


async def test_an_idle_organisation_banks_no_credit(make_queues):
    queues = make_queues(fairness="organisation")
    await push_boefjes(queues, "busy", 40, priority=50)
    await push_boefjes(queues, "other", 5, priority=50)
    await pop_orgs(queues, 10)  # other runs dry after its 5; busy served 5, then 20 more alone
    assert await pop_orgs(queues, 20) == ["busy"] * 20
    await push_boefjes(queues, "other", 20, priority=50)  # back after being idle
    again = await pop_orgs(queues, 10)
    assert collections.Counter(again) == {"busy": 5, "other": 5}, again  # not 10 in a row for other


async def test_fairness_with_runner_filters_serves_only_what_matches(make_queues):
    queues = make_queues(fairness="organisation")
    await push_boefjes(queues, "a", 20, priority=5, boefje_id="nmap")
    await push_boefjes(queues, "b", 10, priority=50, boefje_id="nmap")
    await push_boefjes(queues, "c", 10, priority=50, boefje_id="dns-records")
    nmap = await pop_orgs(queues, 10, boefje_filter("nmap"))
    assert collections.Counter(nmap) == {"a": 5, "b": 5}
    both = await pop_orgs(queues, 8, boefje_filter("nmap", "dns-records"))
    # c waited with work no runner took: it was behind, and catches up, then all take turns
    assert both == ["c"] * 5 + ["a", "b", "c"], both
    only_b = {"filters": [{"column": "organisation", "operator": "in", "value": ["b", "c"]},
                          {"column": "data", "field": "boefje__id", "operator": "eq", "value": "nmap"}]}
    assert set(await pop_orgs(queues, 3, only_b)) == {"b"}
    image = {"filters": [{"column": "data", "field": "boefje__oci_image", "operator": "eq", "value": "img"}]}
    await push_boefjes(queues, "d", 3, priority=50, boefje_id="x", oci_image="img")
    assert await pop_orgs(queues, 4, image) == ["d"] * 3
    # the runners' filter, boefje ids and images (the pair index drives it)
    await push_boefjes(queues, "e", 6, priority=5, boefje_id="y", oci_image="img-y")
    await push_boefjes(queues, "f", 2, priority=50, boefje_id="y", oci_image="img-y")
    await push_boefjes(queues, "g", 2, priority=50, boefje_id="y", oci_image="other")
    runner = {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": ["y", "x"]},
                          {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": ["img-y", "img"]}]}
    assert await pop_orgs(queues, 4, runner) == ["e", "f", "e", "f"]
    assert await pop_orgs(queues, 5, runner) == ["e"] * 4
    on_org = {"filters": [{"column": "organisation", "operator": "eq", "value": "a"}]}
    assert await pop_orgs(queues, 2, on_org) == ["a", "a"]


async def test_a_dedup_batch_is_the_chosen_organisations(make_queues):
    queues = make_queues(fairness="organisation")
    await push_boefjes(queues, "a", 6, priority=5, deduplication_key=KEY_A)
    await push_boefjes(queues, "b", 3, priority=50, deduplication_key=KEY_B)
    await push_boefjes(queues, "b", 2, priority=60)
    first = await queues.pop("boefje")  # a boefje pop: one batch
    second = await queues.pop("boefje")
    assert {r.organisation for r in first} == {"a"} and {r.organisation for r in second} == {"b"}
    assert len(second) == 3 and all(KEY_B in r.data for r in second)
    third = await queues.pop("boefje")
    assert {r.organisation for r in third} == {"b"} and len(third) == 1  # a is 6 ahead now


async def test_fairness_with_limits_passes_over_a_full_group(make_queues):
    rules = parse_rules([{"boefje": "*", "group": "org:{organisation}", "concurrency": 2}])
    queues = make_queues(fairness="organisation", limits=rules)
    await push_boefjes(queues, "a", 10, priority=5)
    await push_boefjes(queues, "b", 10, priority=50)
    await push_boefjes(queues, "c", 10, priority=50)
    held = [(await queues.pop("boefje", limit=1))[0] for _ in range(6)]
    assert collections.Counter(r.organisation for r in held) == {"a": 2, "b": 2, "c": 2}
    assert await queues.pop("boefje", limit=1) == []  # every group full
    await queues.patch(held[0].id, {"status": "completed"})
    [next_one] = await queues.pop("boefje", limit=1)
    assert next_one.organisation == held[0].organisation


async def test_a_merged_pop_of_many_serves_each_task_by_fairness(make_queues):
    queues = make_queues(fairness="organisation")
    for org, n in (("a", 30), ("b", 5), ("c", 5)):
        for _ in range(n):
            data = normalizer_data(organization=org)
            await queues.push("normalizer", organisation=org, data=data, priority=10 if org == "a" else 20)
    popped = await queues.pop("normalizer", limit=40)
    assert len(popped) == 40 and len({r.id for r in popped}) == 40
    if queues.layout.partitions == 1:
        assert collections.Counter(r.organisation for r in popped[:15]) == {"a": 5, "b": 5, "c": 5}


async def test_shares_and_weights_are_reported(make_queues):
    queues = make_queues(fairness="organisation")
    await queues.set_weights({"a": 3})
    assert await queues.weights() == {"a": 3.0}
    await push_boefjes(queues, "a", 8, priority=50)
    await push_boefjes(queues, "b", 8, priority=50)
    await pop_orgs(queues, 8)
    shares = {s.organisation: s for s in await queues.organisation_shares("boefje")}
    assert (shares["a"].served, shares["b"].served) == (6, 2)
    assert (shares["a"].depth, shares["b"].depth) == (2, 6)
    assert shares["a"].share_served == 0.75 and shares["a"].weight == 3.0 and shares["b"].weight == 1.0
    assert shares["a"].virtual_time == pytest.approx(2.0) and shares["b"].virtual_time == 2.0
    await queues.reset_weight("a")
    assert await queues.weights() == {}


async def test_tasks_leave_the_fair_structures_on_every_way_off_the_queue(make_queues, backend_redis):
    queues = make_queues(fairness="organisation", dispatch_lease_ms=1)
    await push_boefjes(queues, "a", 3, priority=50, boefje_id="nmap", oci_image="img", deduplication_key=KEY_A)
    [first, *_] = await queues.peek("boefje", limit=3)
    await queues.patch(first.id, {"status": "cancelled"})
    await queues.pop("boefje")  # the other two, as a batch
    keys = queues.commands.keys("boefje")
    assert await backend_redis.zcard(keys.fair_key("tasks")) == 0
    assert await backend_redis.zcard(keys.fair_key("orgs")) == 0
    assert [f for f in await backend_redis.hkeys(keys.fair_key("vt")) if b"\0" in f[1:]] == []
    await asyncio.sleep(0.01)
    await queues.reap("boefje")  # back on the queue: listed again
    assert await backend_redis.zcard(keys.fair_key("tasks")) == 2 * 4  # b:, i:, p:, d (q: the org index)


async def test_an_organisation_stays_listed_in_each_range_it_has_a_task_left_in(make_queues, backend_redis):
    """A task leaving its pair's slice with others left there keeps the org listed in all its
    ranges; the last of a pair leaving keeps it in its boefje's and image's while tasks of
    theirs are left (fair_index.lua reads the finest range first)."""
    queues = make_queues(fairness="organisation")
    await push_boefjes(queues, "a", 2, priority=50, boefje_id="nmap", oci_image="img1")
    await push_boefjes(queues, "a", 1, priority=60, boefje_id="nmap", oci_image="img2")
    await push_boefjes(queues, "a", 1, priority=70, boefje_id="dns", oci_image="img1")
    keys = queues.commands.keys("boefje")

    async def listed() -> set[str]:
        return {f.decode().removesuffix("\0a") for f in await backend_redis.hkeys(keys.fair_key("vt")) if f.endswith(b"\0a")}

    everywhere = {"q", "b:nmap", "b:dns", "i:img1", "i:img2", "p:4:nmap=img1", "p:4:nmap=img2", "p:3:dns=img1"}
    assert await listed() == everywhere
    tasks = sorted(await queues.peek("boefje", limit=4), key=lambda t: int(t.priority))  # nmap img1 x 2, nmap img2, dns img1

    async def cancel(n: int) -> set[str]:
        await queues.patch(tasks[n].id, {"status": "cancelled"})
        return await listed()

    assert await cancel(0) == everywhere
    assert await cancel(1) == everywhere - {"p:4:nmap=img1"}
    assert await cancel(3) == {"q", "b:nmap", "i:img2", "p:4:nmap=img2"}
    assert await cancel(2) == set()


async def test_turning_fairness_on_with_tasks_queued_serves_them_fairly(make_queues, backend_redis):
    plain = make_queues()
    await push_boefjes(plain, "a", 20, priority=5)
    await push_boefjes(plain, "b", 5, priority=50)
    fair = make_queues(fairness="organisation")
    assert await fair.index_fair() >= 1  # the start of an API process with fairness on
    assert collections.Counter(await pop_orgs(fair, 10)) == {"a": 5, "b": 5}
    # off again for a while: the fair structures go stale (tasks pop and arrive unseen)
    assert await plain.index_fair() == 1
    assert not await backend_redis.hexists(plain.commands.keys("boefje").meta, "fair")
    assert await pop_orgs(plain, 5) == ["a"] * 5
    await push_boefjes(plain, "c", 5, priority=60)
    await fair.index_fair()
    again = await pop_orgs(fair, 10)
    assert collections.Counter(again) == {"a": 5, "c": 5}, again  # c, new, takes turns with a
    assert await pop_orgs(fair, 10) == ["a"] * 5  # what is left; every task once
    assert await fair.qsize("boefje") == 0
