"""Limit-group and fair-pop state broken by hand (or by the healing that moves corrupt records aside), on
a private Redis, with fairness off and on: a group's waiting member that names no live task
is dropped, not an error on every script that meets the group, and a leased task moved aside
gives its group's slot back, so no task of the group is stranded and none handed out twice;
a count written negative heals at the group's next task out."""

from __future__ import annotations

import json
import time

import pytest
import redis

from redisched.client import Client
from redisched.limit_rules import parse_rules
from redisched.queue.layout import QueueLayout
from tests.factories import boefje_data, normalizer_data
from tests.support.servers import private_redis

RULES = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 1}])


@pytest.fixture(params=["none", "organisation"])
def boefje_queue(request):
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        layout = QueueLayout(prefix="h", fairness=request.param, limits=RULES, dispatch_lease_ms=50, max_tries=100)
        direct = Client(client, layout)
        direct.load_functions()
        [keys] = layout.of("boefje")
        yield direct.queue("boefje"), keys, client
        client.close()


def push_nmap(queue, n: int) -> list[str]:
    return [
        queue.push(organisation=f"org{i % 2}", priority=5 + i, data=boefje_data("nmap", organization=f"org{i % 2}")).id
        for i in range(n)
    ]  # fmt: skip


def pop_all(queue, calls: int = 10) -> list[str]:
    popped = []
    for _ in range(calls):
        for task in queue.pop(limit=1):
            popped.append(task.id)
            queue.patch(task.id, {"status": "completed"}, token=task.lease)
    return popped


def corrupt(client: redis.Redis, keys, task_id: str) -> None:
    record = json.loads(client.hget(keys.tasks, task_id))
    record["p"] = 5  # the priority (records.py, STORED_NAMES), a number where a string belongs: moved aside when met
    client.hset(keys.tasks, task_id, json.dumps(record))


def test_waiting_members_naming_no_task_are_dropped_and_the_group_goes_on(boefje_queue):
    queue, keys, client = boefje_queue
    ids = push_nmap(queue, 4)
    [held] = queue.pop(limit=1)
    assert held.id == ids[0]
    client.hdel(keys.tasks, ids[1])  # the waiting head: its record gone
    corrupt(client, keys, ids[2])  # the next: moved aside once met
    # before: "attempt to index local 'rec' (a nil value)" on this and every later
    # completion, push or pop that refreshed the group: its tasks stranded for good
    assert queue.patch(held.id, {"status": "completed"}, token=held.lease).status == "completed"
    assert pop_all(queue) == [ids[3]]
    assert queue.qsize() == 0
    assert client.zcard(keys.limq) == 0 and client.zcard(keys.queue) == 0
    assert client.hexists(keys.key("quarantine"), ids[2])


def test_a_leased_task_listed_as_waiting_in_its_group_is_dropped_not_a_block(boefje_queue):
    queue, keys, client = boefje_queue
    ids = push_nmap(queue, 4)
    [held] = queue.pop(limit=1)
    client.zadd(keys.limq, {b"nmap\0" + held.order: 0})  # its member back, as if still waiting
    assert queue.patch(held.id, {"status": "completed"}, token=held.lease).status == "completed"
    # before: the group's head for good, placed and dropped by every pop: the rest stranded
    assert pop_all(queue) == ids[1:]
    assert client.zcard(keys.limq) == 0


def test_a_leased_task_moved_aside_gives_its_groups_slot_back(boefje_queue):
    queue, keys, client = boefje_queue
    ids = push_nmap(queue, 3)
    [held] = queue.pop(limit=1)
    corrupt(client, keys, held.id)
    time.sleep(0.1)  # its lease (50 ms) expires
    assert queue.reap() == (0, 0)  # met by the reaper: moved aside, not requeued
    assert client.hexists(keys.key("quarantine"), held.id)
    # before: the group's count stayed 1 with none of its tasks out, its 2 others never popped
    assert pop_all(queue) == ids[1:]
    assert client.hget(keys.limits, "nmap\0n") is None


def test_a_negative_count_written_by_hand_lets_the_group_go_over_its_cap_by_one_at_most(boefje_queue):
    queue, keys, client = boefje_queue
    push_nmap(queue, 4)
    client.hset(keys.limits, "nmap\0n", "-5")
    held = [task for _ in range(4) for task in queue.pop(limit=1)]
    # read as room (none of its tasks out: right); the first one out heals the count
    assert len(held) == 1, "before: all 4 out at once under a cap of 1"
    assert client.hget(keys.limits, "nmap\0n") == b"1"


def test_a_cooldown_started_ahead_of_the_clock_waits_one_spacing_not_until_the_clock_catches_up():
    """The group's last start is Redis's clock; after a failover to a host whose clock is an
    hour behind (here: written an hour ahead), the group waited that hour. Now it is taken
    as the moment a script meets it: the group waits at most two spacings."""
    rules = parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 0.05}])
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        layout = QueueLayout(prefix="h", fairness="organisation", limits=rules)
        direct = Client(client, layout)
        direct.load_functions()
        queue = direct.queue("boefje")
        [keys] = layout.of("boefje")
        ids = [queue.push(organisation="a", priority=5 + i, data=boefje_data("shodan", organization="a")).id for i in range(2)]
        [first] = queue.pop(limit=1)
        client.hset(keys.limits, "shodan\0last", int(time.time() * 1000) + 3_600_000)
        assert queue.pop(limit=1) == []  # cooling
        second, deadline = [], time.monotonic() + 5  # a spacing or two once met, not the hour
        while not second and time.monotonic() < deadline:
            time.sleep(0.02)
            second = queue.pop(limit=1)
        assert [first.id] + [task.id for task in second] == ids
        client.close()


def test_a_malformed_fair_listing_member_is_removed_not_an_error_on_every_pop():
    """A member of fair:orgs without its second NUL (written by hand): before, every pop of
    the queue failed ("attempt to perform arithmetic on local 'at'")."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        layout = QueueLayout(prefix="h", fairness="organisation")
        direct = Client(client, layout)
        direct.load_functions()
        queue = direct.queue("normalizer")
        [keys] = layout.of("normalizer")
        for org in ("a", "b"):
            for _ in range(4):
                queue.push(organisation=org, priority=5, data=normalizer_data())
        client.zadd(keys.fair_key("orgs"), {"q\0": 0, "q\0junk": 0, "q\0\0": 0})  # first, last, empty key
        served = [task.organisation for _ in range(8) for task in queue.pop(limit=1)]
        assert served == ["a", "b"] * 4  # the fair order holds
        assert queue.pop(limit=1) == []  # walks the listing to its end
        assert not {b"q\0", b"q\0junk"} & set(client.zrange(keys.fair_key("orgs"), 0, -1))
        client.close()


@pytest.mark.parametrize("edit", [{"p": "9"}, {"p": "-3"}, {"c": "0000000000000001"}])
@pytest.mark.parametrize("edited", [0, 1])
def test_a_limited_tasks_record_whose_order_is_edited_by_hand_waits_under_it_not_stranded(boefje_queue, edit, edited):
    """A queued task of a limit group whose record's priority or created_at is edited in place
    (its group's member and its queue member no longer its order) is put back under its
    record's order by the script that meets its old member: it is popped in turn, once its
    group has room, and qsize agrees (before: live and queued for good, never popped)."""
    queue, keys, client = boefje_queue
    ids = push_nmap(queue, 2)  # the group's head placed, the other waiting behind it
    stored = json.loads(client.hget(keys.tasks, ids[edited]))
    client.hset(keys.tasks, ids[edited], json.dumps(stored | edit))
    assert queue.qsize() == 2
    popped = []
    for _ in range(6):
        got = queue.pop(limit=1)
        popped += [t.id for t in got]
        for task in got:
            queue.patch(task.id, {"status": "completed"})
        if len(popped) == 2:
            break
    assert sorted(popped) == sorted(ids)
    assert queue.qsize() == 0 and queue.peek() == [] and queue.pop(limit=1) == []
    assert not client.hexists(keys.quarantine, ids[edited])


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_a_better_push_into_a_group_whose_placed_head_is_damaged_goes_in(boefje_queue, damage):
    queue, keys, client = boefje_queue
    worse = queue.push(organisation="org0", priority=10, data=boefje_data("nmap", organization="org0"))
    if damage == "deleted":
        client.hdel(keys.tasks, worse.id)
    else:
        corrupt(client, keys, worse.id)
    # before: the push's script failed taking the damaged head off the queue (its record nil)
    better = queue.push(organisation="org0", priority=5, data=boefje_data("nmap", organization="org0"))
    assert pop_all(queue) == [better.id]
    assert queue.qsize() == 0 and client.zcard(keys.queue) == 0
