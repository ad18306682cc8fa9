"""The stored record (lua/includes/common.lua, stored_form; queue/records.py): short field
names, without what the key, the queue and the other fields give (id, scheduler_id, type,
pk, modified_at = created_at, rev = modified_at, ix.org = organisation), '/' not escaped, so
it takes a smaller allocation; readers put every field back. A record an earlier version
wrote in full reads, pops and finishes the same; one that mixes the two forms is moved aside."""

from __future__ import annotations

import json

import msgspec
import pytest
import redis

from redisched.client import Client
from redisched.queue.commands import INT64_MAX, INT64_MIN
from redisched.queue.layout import QueueLayout
from redisched.queue.records import decode_record
from tests.factories import boefje_data
from tests.support.servers import private_redis

IMAGE = "ghcr.io/minvws/openkat/nmap:latest"


def _queue(url: str):
    client = redis.Redis.from_url(url)
    direct = Client(client, QueueLayout(prefix="form"))
    direct.load_functions()
    return client, direct, direct.queue("boefje")


def _full_form(record) -> str:
    """The record as an earlier version stored it: every field, long names, '/' escaped by cjson."""
    full = msgspec.to_builtins(msgspec.structs.replace(record, data=None))
    return json.dumps(full).replace("/", "\\/")


def test_a_queued_tasks_record_is_stored_short_and_reads_in_full():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        raw = client.hget(keys.tasks, pushed.id)
        stored = json.loads(raw)
        assert set(stored) == {"o", "p", "s", "c", "h", "sc", "x"}  # no id, queue, type, pk, modified_at, rev
        assert stored["x"] == {"boefje": "nmap-tcp", "image": IMAGE}
        assert b"\\/" not in raw and IMAGE.encode() in raw
        record = decode_record(raw, task_id=pushed.id, queue_id="boefje")
        assert record == decode_record(raw, task_id=pushed.id, queue_id="boefje")
        assert (record.id, record.scheduler_id, record.type, record.pk) == (pushed.id, "boefje", "boefje", pushed.pk)
        assert record.modified_at == record.created_at == pushed.created_at
        assert record.rev == pushed.rev == record.created_at
        assert record.ix == pushed.ix == {"org": "o", "boefje": "nmap-tcp", "image": IMAGE}
        # still in the organisation's index: an organisation filter pops it
        assert client.zcard(keys.key("ix:org")) == 1
        # the push event carries the event form (the id and the queue in front); the
        # snapshotter decodes it in full
        ((_, fields),) = client.xrange(keys.events)
        event = json.loads(fields[b"rec"])
        assert (event["i"], event["q"]) == (pushed.id, "boefje") and "pk" not in event
        assert decode_record(fields[b"rec"]) == msgspec.structs.replace(pushed, data=None)

        (popped,) = queue.pop({"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]}, limit=1)
        assert popped.id == pushed.id and popped.status == "dispatched" and popped.type == "boefje"
        after = json.loads(client.hget(keys.tasks, pushed.id))
        # dispatched: modified_at moved on and is kept; the rev of the same call is left out
        assert after["m"] != after["c"] and "r" not in after and after["l"] == popped.lease
        assert int(decode_record(client.hget(keys.tasks, pushed.id), task_id=pushed.id, queue_id="boefje").rev) > int(pushed.rev)


def test_the_priority_key_the_scripts_derive_orders_every_priority():
    """pk is not stored: the scripts derive it from the priority (in halves of 10 digits, a
    double holds no 19-digit number) for the order key, as records.py does."""
    priorities = [INT64_MAX, INT64_MIN, -1, 2, 10**10, 10**10 - 1, -(10**10), 9_999_999_999_999_999, 6854775808, -6854775808, -6854775809]
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = {queue.push(organisation="o", data=boefje_data(f"b{i}"), priority=p).id: p for i, p in enumerate(priorities)}
        keys = direct.commands.keys("boefje")
        peeked = queue.peek(limit=20)
        assert [record.priority for record in peeked] == [str(p) for p in sorted(priorities)]
        assert [record.order for record in peeked] == client.zrange(keys.queue, 0, -1)
        popped = [record for _ in priorities for record in queue.pop(limit=1)]
        assert [int(record.priority) for record in popped] == sorted(priorities)
        assert {record.id for record in popped} == set(pushed)
        # every order key the pops took off was the one the push put on: nothing left behind
        assert client.zcard(keys.queue) == client.zcard(keys.key("ix:org")) == client.zcard(keys.pairs) == 0
        assert client.hget(keys.meta, "quarantined") is None and client.hget(keys.meta, "stray_members") is None


def test_a_record_an_earlier_version_wrote_in_full_reads_pops_and_finishes():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        client.hset(keys.tasks, pushed.id, _full_form(pushed))

        (peeked,) = queue.peek()
        assert msgspec.structs.replace(peeked, data=None) == msgspec.structs.replace(pushed, data=None)
        popped, = queue.pop({"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]}, limit=1)
        assert popped.id == pushed.id and popped.data == pushed.data and popped.scheduler_id == "boefje"
        # written back in the short form
        assert "o" in json.loads(client.hget(keys.tasks, pushed.id))
        done = queue.patch(pushed.id, {"status": "completed"}, token=popped.lease)
        assert done is not None and done.status == "completed"
        assert client.hget(keys.meta, "quarantined") is None


def test_a_full_record_of_another_type_keeps_its_type():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5)
        keys = direct.commands.keys("boefje")
        client.hset(keys.tasks, pushed.id, _full_form(msgspec.structs.replace(pushed, type="other")))
        (popped,) = queue.pop(limit=1)
        assert popped.type == "other" and json.loads(client.hget(keys.tasks, pushed.id))["t"] == "other"


def test_a_record_without_created_at_is_still_quarantined():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        del stored["c"]
        client.hset(keys.tasks, pushed.id, json.dumps(stored))
        assert queue.pop(limit=1) == []
        assert client.hexists(keys.quarantine, pushed.id)


@pytest.mark.parametrize(
    ("form", "mixed_in"),
    [
        ("short", {"status": "completed"}),
        ("short", {"pk": "00000000000000000001"}),
        ("short", {"id": "00000000-0000-0000-0000-000000000000"}),
        ("short", {"organisation": "other"}),
        ("full", {"s": "completed"}),
        ("full", {"o": "other"}),
    ],
)
def test_a_record_that_mixes_the_two_forms_is_moved_aside_not_misread(form, mixed_in):
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id) if form == "short" else _full_form(pushed))
        client.hset(keys.tasks, pushed.id, json.dumps(stored | mixed_in))
        assert direct.get(pushed.id) is None  # the API's read refuses it too
        assert queue.pop(limit=1) == []
        reason = json.loads(client.hget(keys.quarantine, pushed.id))["reason"]
        assert "mixes" in reason
        assert client.zcard(keys.queue) == 0 or client.hget(keys.meta, "stray_members") is not None


@pytest.mark.parametrize(
    "priority", ["9223372036854775808", "-9223372036854775809", "99999999999999999999", "1e5", "+5", " 5", "", "0x10"]
)
def test_a_short_record_whose_priority_has_no_key_is_moved_aside(priority):
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        client.hset(keys.tasks, pushed.id, json.dumps(stored | {"p": priority}))
        assert direct.get(pushed.id) is None
        assert queue.pop(limit=1) == []
        assert client.hexists(keys.quarantine, pushed.id)


def test_decoding_refuses_what_is_no_record():
    for raw in [b"{}", b'{"o":"x","p":"5","s":"queued","c":"1"}', b'{"i":"a","q":"boefje","o":"x","p":"x","s":"queued","c":"1"}']:
        with pytest.raises(msgspec.ValidationError):
            decode_record(raw)


@pytest.mark.parametrize(
    "corrupt",
    [
        {"t": None},
        {"n": None},
        {"n": 1.5},
        {"r": None},
        {"lg": "g", "lc": None},
        {"lg": "g", "lc": "1"},
        {"lg": 5},
        {"lg": {"a": 1}},
        {"lg": "g", "lo": 7},
        {"lg": "g", "lo": []},
    ],
)
def test_a_record_whose_field_the_api_cannot_read_is_moved_aside_not_handed_out(corrupt):
    """What the scripts serve, the API decodes (records.TaskRecord): a field of a type it
    refuses moves the record aside, rather than a pop leasing a task its caller never gets
    (or failing the script on a group name that is no string)."""
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        client.hset(keys.tasks, pushed.id, json.dumps(stored | corrupt))
        assert direct.get(pushed.id) is None
        assert queue.peek() == []
        assert queue.pop(limit=1) == []
        assert client.hexists(keys.quarantine, pushed.id)
        assert queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5).id != pushed.id


@pytest.mark.parametrize(
    ("priority", "value"),
    [("0005", 5), ("00000000000000000005", 5), ("-00000000000000000000005", -5), ("0" * 5000 + "5", 5)],
)
def test_a_priority_with_leading_zeros_reads_the_same_in_the_scripts_and_the_api(priority, value):
    """The scripts derive the order key of a priority written with leading zeros (any length)
    and serve the task: the API's read agrees it is live, not past int64."""
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=value)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        client.hset(keys.tasks, pushed.id, json.dumps(stored | {"p": priority}))
        got = direct.get(pushed.id)
        assert got is not None and got.pk == pushed.pk and int(got.priority) == value
        (popped,) = queue.pop(limit=1)
        assert popped.id == pushed.id and popped.pk == pushed.pk
        assert not client.hexists(keys.quarantine, pushed.id)


def test_a_full_record_whose_pk_is_not_its_prioritys_key_is_moved_aside_not_stranded():
    """The full form stored pk; the short one derives it from the priority. A full record
    whose pk disagrees was placed by the one and would be saved by the other: after a change
    that keeps it queued, its queue member no longer named it (live, queued, never popped)."""
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5)
        keys = direct.commands.keys("boefje")
        client.hset(keys.tasks, pushed.id, _full_form(msgspec.structs.replace(pushed, priority="7")))
        assert direct.get(pushed.id) is None
        assert queue.patch(pushed.id, {"organisation": "o2"}) is None
        assert queue.peek() == [] and queue.pop(limit=1) == []
        assert client.hexists(keys.quarantine, pushed.id) and queue.qsize() == 0


@pytest.mark.parametrize("written", [{"q": "normalizer"}, {"i": "00000000-0000-4000-8000-000000000000"}])
def test_a_stored_record_naming_another_queue_or_id_than_its_key_is_moved_aside(written):
    """i and q belong to the event form; one written into a stored record that disagrees with
    where it is stored is not read either way (the API's read gave the other queue)."""
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp"), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        client.hset(keys.tasks, pushed.id, json.dumps(stored | written))
        assert direct.get(pushed.id) is None
        assert queue.pop(limit=1) == []
        assert client.hexists(keys.quarantine, pushed.id)


@pytest.mark.parametrize("fairness", ["none", "organisation"])
@pytest.mark.parametrize("edit", [{"p": "7"}, {"p": "-3"}, {"c": "0000000000000001"}, {"c": "9000000000000000"}])
@pytest.mark.parametrize("pop_filter", [None, "org", "pair"])
def test_a_queued_record_whose_order_is_edited_by_hand_is_placed_again_not_stranded(edit, fairness, pop_filter):
    """A queued task's member in the queue (and its indexes) is its order key: priority key,
    created_at, id. A record whose priority or created_at is edited in place no longer matches
    its member: a pop dropped the member as a stray and the task stayed live and queued
    (qsize counted it) but was never popped again. The pop that meets it places it again under
    its record's own order: it runs, and qsize, peek and pop agree."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="form", fairness=fairness))
        direct.load_functions()
        queue = direct.queue("boefje")
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        client.hset(keys.tasks, pushed.id, json.dumps(stored | edit))
        filters = {
            None: None,
            "org": {"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]},
            "pair": {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": ["nmap-tcp"]}]},
        }
        assert queue.qsize() == 1
        popped = []
        for _ in range(3):
            popped += queue.pop(filters[pop_filter], limit=1)
            if popped:
                break
        assert [t.id for t in popped] == [pushed.id]
        assert (popped[0].priority, popped[0].created_at) == ((stored | edit)["p"], (stored | edit)["c"])
        assert queue.qsize() == 0 and queue.peek() == [] and queue.pop(limit=1) == []
        assert not client.hexists(keys.quarantine, pushed.id)
