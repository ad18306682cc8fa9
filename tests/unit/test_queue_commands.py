"""The queue's pure rules: what a call sends to Redis, before any script runs."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from redisched.errors import BadRequest, NotFound
from redisched.queue.commands import QueueCommands
from redisched.queue.keys import QueueKeys, partition_of
from redisched.queue.layout import QueueLayout, QueueOptions
from redisched.queue.records import order_key, priority_key
from tests.factories import boefje_data, report_data


def test_every_key_of_a_queue_shares_one_hash_tag():
    keys = QueueKeys("rs", "boefje").all
    assert all(key.startswith("rs:{boefje}:") for key in keys)
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("partitions", [2, 3, 4, 7, 16])
def test_partition_i_of_n_hashes_into_the_i_th_of_n_slot_ranges(partitions):
    from redis.crc import key_slot

    layout = QueueLayout("rs", partitions)
    for keys in layout.of("boefje"):
        slots = {key_slot(key.encode()) for key in keys.all}
        assert len(slots) == 1, "one partition, one slot"
        low, high = keys.partition * 16384 // partitions, (keys.partition + 1) * 16384 // partitions
        assert low <= slots.pop() < high


def test_a_push_goes_to_the_partition_of_its_hash_and_twins_always_to_the_same_one():
    commands = QueueCommands(QueueLayout(partitions=3))
    seen = set()
    for _ in range(60):
        data = boefje_data()
        first = commands.push("boefje", organisation="o", data=data, priority=3)
        twin = commands.push("boefje", organisation="o", data=data, priority=9)
        assert first.keys == twin.keys
        record = msgspec.json.decode(first.args[0])
        assert first.keys == commands.layout.for_hash("boefje", record["hash"]).all
        seen.add(partition_of(record["hash"], 3))
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("pair", [(-(2**63), -5), (-5, -1), (-1, 1), (1, 2**53), (2**53, 2**53 + 1), (2**63 - 2, 2**63 - 1)])
def test_priority_keys_sort_as_the_priorities_do(pair):
    low, high = pair
    assert priority_key(low) < priority_key(high)
    assert len(priority_key(low)) == len(priority_key(high)) == 20


def test_order_key_breaks_priority_ties_by_creation_time():
    first = order_key(5, 1_700_000_000_000_001, str(uuid.uuid4()))
    later = order_key(5, 1_700_000_000_000_002, str(uuid.uuid4()))
    assert first < later


def test_push_call_carries_a_normalised_record_with_index_values():
    commands = QueueCommands(QueueLayout(options={"boefje": QueueOptions(maxsize=7, allow_priority_updates=True)}))
    data = boefje_data("b1", organization="org9", oci_image="img")
    call = commands.push("boefje", organisation="org9", data=data, priority=12)
    record = msgspec.json.decode(call.args[0])
    assert record["ix"] == {"org": "org9", "boefje": "b1", "image": "img"}
    assert record["pk"] == priority_key(12) and "data" not in record
    assert msgspec.json.decode(call.args[1])["id"] == record["id"]
    assert call.args[2:5] == [7, "priority", "1"]
    assert call.keys == QueueKeys("rs", "boefje").all


def test_report_tasks_keep_the_given_id():
    task_id = uuid.uuid4()
    call = QueueCommands(QueueLayout()).push("report", organisation="o", data=report_data(), priority=1, task_id=task_id)
    assert msgspec.json.decode(call.args[0])["id"] == str(task_id)


@pytest.mark.parametrize("priority", [None, 0, True, 2**63, -(2**63) - 1, "5"])
def test_priority_must_be_a_non_zero_int64(priority):
    with pytest.raises(BadRequest, match="malformed item"):
        QueueCommands(QueueLayout()).push("boefje", organisation="o", data=boefje_data(), priority=priority)


def test_unknown_scheduler_is_not_found():
    with pytest.raises(NotFound, match="Scheduler nope not found"):
        QueueCommands(QueueLayout()).push("nope", organisation="o", data=boefje_data(), priority=1)


def test_negative_limit_is_a_bad_request_and_zero_needs_no_round_trip():
    commands = QueueCommands(QueueLayout())
    with pytest.raises(BadRequest):
        commands.pop("boefje", limit=-1)
    assert commands.pop("boefje", limit=0) is None


def test_patch_changes_are_translated_to_record_fields():
    call = QueueCommands(QueueLayout()).patch("boefje", "id", {"status": "queued", "priority": 3, "organisation": "o2", "id": "ignored"})
    fields = msgspec.json.decode(call.args[2])
    assert fields == {"status": "queued", "priority": "3", "pk": priority_key(3), "organisation": "o2", "ix": {"org": "o2"}}


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), 1e17, 365 * 86400 + 1])
def test_a_lease_extension_must_be_a_positive_length_that_ends_at_a_date(seconds):
    with pytest.raises(BadRequest, match="lease length"):
        QueueCommands(QueueLayout()).extend_lease("boefje", str(uuid.uuid4()), "token", seconds)


def test_every_script_gets_the_error_codes_of_the_one_enum():
    from redisched.errors import ScriptError
    from redisched.queue.scripts import load

    source = load("pop").source
    assert all(f"local E_{code.name} = {code.value}\n" in source for code in ScriptError)
