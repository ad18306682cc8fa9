"""Packed queue order keys (keys.py; lua/includes/common.lua, order_of): byte order is queue
order at every priority and created_at the API accepts, the Python and the Lua form agree,
and a queue an earlier version left with text order keys is served meanwhile and moved by
the bounded start-up migration (lua/index_orders.lua) to exactly what this version writes,
limits and the fair pop included, no task lost or handed out twice."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
import redis

from redisched.client import Client
from redisched.limit_rules import parse_rules
from redisched.queue import commands as queue_commands
from redisched.queue.commands import INT64_MAX, INT64_MIN
from redisched.queue.layout import QueueLayout
from redisched.queue.records import decode_record, order_key, order_time_us
from tests.factories import boefje_data
from tests.support.servers import private_redis

RULES = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 1}])
ORDER_SETS = ("queue", "dedupq", "pairs", "limq", "ix:org", "ix:boefje", "ix:image", "ix:dedup", "fair:tasks")
PACKED = 35


def _direct(url: str, **layout):
    client = redis.Redis.from_url(url)
    direct = Client(client, QueueLayout(prefix="ok", **layout))
    direct.load_functions()
    [keys] = direct.layout.of("boefje")
    return client, direct, keys


def _text_order(record) -> bytes:
    """The order key an earlier version wrote: 20-digit priority key, created_at, id."""
    return f"{record.pk}{record.created_at}{record.id}".encode()


def _as_earlier_version(client: redis.Redis, keys) -> None:
    """Every member and head in the text form an earlier version wrote them in, and no
    K_META orders: as that version left the queue."""
    def text(order: bytes) -> bytes:
        task_id = order[-16:].hex()
        task_id = f"{task_id[:8]}-{task_id[8:12]}-{task_id[12:16]}-{task_id[16:20]}-{task_id[20:]}"
        record = decode_record(client.hget(keys.tasks, task_id), task_id=task_id, queue_id="boefje")
        assert record.order == order
        return _text_order(record)

    for name in ORDER_SETS:
        key = keys.key(name)
        members = client.zrange(key, 0, -1)
        if members:
            client.delete(key)
            client.zadd(key, {member[:-PACKED] + text(member[-PACKED:]): 0 for member in members})
    for pair, head in client.hgetall(keys.heads).items():
        client.hset(keys.heads, pair, text(head))
    client.hdel(keys.meta, "orders", "orders_cursor")


def _state(client: redis.Redis, keys) -> dict:
    sets = {name: client.zrange(keys.key(name), 0, -1) for name in ORDER_SETS + ("fair:orgs",)}
    meta = client.hmget(keys.meta, "limited_placed", "stray_members", "quarantined")
    return {**sets, "heads": client.hgetall(keys.heads), "fair:vt": client.hgetall(keys.key("fair:vt")), "meta": meta}


def _push_mix(queue) -> list[str]:
    """Boefje tasks of two organisations: a limited group (nmap, one at a time), tasks of other
    boefjes and images, a person's scans (priority 1), some with a deduplication key."""
    ids = []
    for i in range(24):
        boefje = ("nmap", "dns-records", "nmap-udp")[i % 3]
        org = f"org{i % 2}"
        extra = {"deduplication_key": f"00000000-0000-4000-8000-00000000000{i % 4}"} if i % 5 == 0 else {}
        if i % 2:
            extra["oci_image"] = f"ghcr.io/minvws/openkat/{boefje}:latest"
        data = boefje_data(boefje, ooi=f"Hostname|internet|o{i}.example", organization=org, **extra)
        ids.append(queue.push(organisation=org, priority=1 if i % 7 == 0 else 10 + i % 4, data=data).id)
    return ids


def _drain(queue, filters=None) -> list[str]:
    """Pop one at a time, finishing each, until none is left; never two of the nmap group out."""
    popped = []
    for _ in range(200):
        tasks = queue.pop(filters, limit=1)
        if not tasks:
            return popped
        popped += [t.id for t in tasks]
        for t in tasks:
            queue.patch(t.id, {"status": "completed"}, token=t.lease)
    return popped


def test_python_and_lua_pack_every_priority_and_created_at_alike_in_queue_order():
    priorities = [INT64_MIN, INT64_MIN + 1, -(10**15), -1, 1, 2, 10**15 + 7, INT64_MAX - 1, INT64_MAX]
    moments = [
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(2255, 6, 5, 23, 47, 34, 740992, tzinfo=timezone.utc),  # 2^53 µs: past a double's exact range
        datetime(2286, 11, 20, 17, 46, 40, tzinfo=timezone.utc),  # 10^16 µs: the text form's 16 digits end
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ]
    with private_redis() as url:
        client, direct, keys = _direct(url)
        queue = direct.queue("boefje")
        pushed = []
        for i, priority in enumerate(priorities):
            for j, moment in enumerate(moments):
                data = boefje_data("nmap-tcp", ooi=f"Hostname|internet|h{i}-{j}.example", organization="o")
                task = queue.push(organisation="o", data=data, priority=priority)
                pushed.append(queue.patch(task.id, {"created_at": moment}))
        members = client.zrange(keys.queue, 0, -1)
        assert all(len(m) == PACKED for m in members) and members == sorted(members)
        by_order = sorted(pushed, key=lambda r: (int(r.priority), order_time_us(r.created_at), r.id))
        assert members == [order_key(int(r.priority), r.created_at, r.id) for r in by_order]
        assert members == [r.order for r in by_order]
        popped = _drain(queue)
        assert popped == [r.id for r in by_order]
        assert client.hget(keys.meta, "stray_members") is None and client.hget(keys.meta, "quarantined") is None


def test_members_of_any_length_and_bytes_are_passed_over_and_removed():
    with private_redis() as url:
        client, direct, keys = _direct(url)
        queue = direct.queue("boefje")
        real = [queue.push(organisation="o", data=boefje_data("nmap", ooi=f"Hostname|internet|r{i}.example"),
                           priority=5).id for i in range(3)]  # fmt: skip
        junk = {bytes(length % 3) + os.urandom(length): 0 for length in range(0, 90)}  # NUL bytes, odd lengths, 35 too
        client.zadd(keys.queue, junk)
        client.zadd(keys.key("ix:org"), {b"o\0" + member: 0 for member in junk})
        by_org = {"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]}
        popped = []
        for filters, key in ((None, keys.queue), (by_org, keys.key("ix:org"))):
            for _ in range(50):  # a pop's scan stops on time (a loaded machine): the next goes on
                popped += [t.id for t in queue.pop(filters, limit=1)]
                if client.zcard(key) == 0:
                    break
        assert sorted(popped) == sorted(real)
        assert client.zcard(keys.queue) == client.zcard(keys.key("ix:org")) == 0
        assert int(client.hget(keys.meta, "stray_members")) >= len(junk)


@pytest.mark.parametrize("fairness", ["none", "organisation"])
def test_an_earlier_versions_text_order_keys_are_served_and_migrated_in_bounded_steps(fairness, monkeypatch):
    with private_redis() as url:
        client, direct, keys = _direct(url, fairness=fairness, limits=RULES)
        queue = direct.queue("boefje")
        ids = _push_mix(queue)
        packed = _state(client, keys)
        expected = [t.id for t in queue.peek(limit=100)]
        _as_earlier_version(client, keys)
        assert all(len(m) > PACKED for m in client.zrange(keys.queue, 0, -1))
        assert client.hget(keys.meta, "orders") is None

        # meanwhile, both forms: a peek reads the text members, a push adds a packed one
        assert [t.id for t in queue.peek(limit=100)] == expected
        late = queue.push(organisation="org0", priority=3, data=boefje_data("dns-records", ooi="Hostname|internet|late.example",
                                                                              organization="org0")).id  # fmt: skip
        assert len(min(client.zrange(keys.queue, 0, -1), key=len)) == PACKED

        monkeypatch.setattr(queue_commands, "INDEX_ORDERS_BATCH", 3)
        assert direct.index_orders() >= 5  # ~25 members, 3 a step: the waiting set, then the queue
        assert client.hget(keys.meta, "orders") == b"packed" and client.hget(keys.meta, "orders_cursor") is None
        assert direct.index_orders() == 1  # nothing left to do
        queue.patch(late, {"status": "cancelled"})
        migrated = _state(client, keys)
        assert migrated == packed, "the migration writes what this version writes"
        assert [t.id for t in queue.peek(limit=100)] == expected

        popped = _drain(queue)
        assert sorted(popped) == sorted(ids) and len(popped) == len(set(popped))
        assert client.zcard(keys.queue) == client.zcard(keys.limq) == client.zcard(keys.pairs) == 0
        assert client.hget(keys.meta, "stray_members") is None and client.hget(keys.meta, "quarantined") is None


@pytest.mark.parametrize("fairness", ["none", "organisation"])
def test_text_order_keys_pop_and_finish_before_the_migration(fairness):
    with private_redis() as url:
        client, direct, keys = _direct(url, fairness=fairness, limits=RULES)
        queue = direct.queue("boefje")
        ids = _push_mix(queue)
        _as_earlier_version(client, keys)
        first = []
        for _ in range(6):  # some of them under their text keys, limits held
            tasks = queue.pop(limit=2)
            assert sum(1 for t in tasks if t.lg == "nmap") <= 1
            first += tasks
            for t in tasks:
                queue.patch(t.id, {"status": "completed"}, token=t.lease)
        more = [queue.push(organisation="org1", priority=12, data=boefje_data(b, ooi=f"Hostname|internet|m{i}.example",
                                                                              organization="org1")).id
                for i, b in enumerate(["nmap", "dns-records", "nmap"])]  # fmt: skip
        direct.index_orders()
        popped = [t.id for t in first] + _drain(queue)
        assert sorted(popped) == sorted(ids + more) and len(popped) == len(set(popped))
        assert all(client.zcard(keys.key(name)) == 0 for name in ORDER_SETS)
        assert client.hlen(keys.heads) == 0 and client.hget(keys.meta, "limited_placed") in (None, b"0")
        assert client.hget(keys.meta, "stray_members") is None and client.hget(keys.meta, "quarantined") is None
