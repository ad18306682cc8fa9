"""Each queue operation's fan-out, stepped through by hand without Redis: which calls a plan
sends, in how many round trips, and how it folds their replies into the result."""

from __future__ import annotations

import pytest

from redisched.errors import BadRequest, Conflict, NotFound
from redisched.queue import plans
from redisched.queue.calls import Command, ScriptCall
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.records import TaskRecord, priority_key
from tests.factories import boefje_data

TASK_ID = "00000000-0000-4000-8000-000000000001"


def three() -> QueueCommands:
    return QueueCommands(QueueLayout(prefix="rs", partitions=3))


def record(task_id: str = TASK_ID, priority: str = "2") -> TaskRecord:
    return TaskRecord(
        id=task_id, scheduler_id="normalizer", organisation="o", priority=priority, status="queued",
        type="normalizer", created_at="0", modified_at="0", pk=priority_key(int(priority)),
    )  # fmt: skip


def run(plan, *replies):
    """Step a plan: send it each batch's replies in turn; (batches it yielded, its result)."""
    batches, reply = [], None
    try:
        batches.append(plan.send(None))
        for reply in replies:
            batches.append(plan.send(reply))
    except StopIteration as done:
        return batches, done.value
    raise AssertionError(f"the plan wanted more than {len(replies)} round trips")


def partitions_of(batch) -> list[tuple[str, int]]:
    """(queue, partition) each call of a batch goes to, from its first key's hash tag."""
    layout = QueueLayout(prefix="rs", partitions=3)
    by_tag = {keys.tag: (keys.queue_id, keys.partition) for keys in layout.every()}
    found = []
    for call in batch:
        key = call.keys[0] if isinstance(call, ScriptCall) else call.args[1]
        found.append(by_tag[key.rsplit(":", 1)[0]])
    return found


def test_a_push_is_one_call_to_the_partition_of_its_hash():
    commands = three()
    [batch], _ = run(plans.push(commands, "boefje", organisation="o", data=boefje_data(), priority=3), [record()])
    assert len(batch) == 1 and batch[0].script.name == "push"


def test_push_many_sends_one_run_per_partition_per_round_trip_in_task_order():
    commands = three()
    tasks = [{"organisation": "o", "data": boefje_data(), "priority": 3} for _ in range(700)]
    tasks[5]["priority"] = 0  # refused before any round trip, in its own slot
    plan = plans.push_many(commands, "boefje", tasks)
    rounds = [plan.send(None)]
    partitions = {keys.all[0]: keys.partition for keys in commands.layout.of("boefje")}
    while True:
        batch = rounds[-1]
        assert len({call.keys[0] for call in batch}) == len(batch), "one run per partition per round trip"
        assert all(len(call.args) <= 12 * 256 for call in batch)
        replies = [[[b"{}", b"{}"]] * (len(call.args) // 12) for call in batch]
        try:
            rounds.append(plan.send([[("pushed", partitions[c.keys[0]])] * len(r) for c, r in zip(batch, replies)]))
        except StopIteration as done:
            outcomes = done.value
            break
    assert len(outcomes) == 700 and isinstance(outcomes[5], BadRequest)
    assert sum(len(call.args) // 12 for batch in rounds for call in batch) == 699
    per_partition: dict[str, int] = {}
    for call in (call for batch in rounds for call in batch):
        per_partition[call.keys[0]] = per_partition.get(call.keys[0], 0) + len(call.args) // 12
    assert len(per_partition) == 3
    assert len(rounds) == max(-(-count // 256) for count in per_partition.values()), "full runs, as few round trips as that"


def test_a_pop_asks_partition_after_partition_only_for_what_is_still_missing():
    batches, popped = run(plans.pop(three(), "normalizer", limit=5, start=1), [["a", "b"]], [[]], [["c", "d", "e"]])
    assert [partitions_of(b) for b in batches] == [[("normalizer", 1)], [("normalizer", 2)], [("normalizer", 0)]]
    assert [b[0].args[4] for b in batches] == [5, 3, 3]  # the limit each partition is asked for
    assert popped == ["a", "b", "c", "d", "e"]


def test_a_pop_stops_once_it_has_its_limit():
    batches, popped = run(plans.pop(three(), "normalizer", limit=2), [["a", "b"]])
    assert len(batches) == 1 and popped == ["a", "b"]


def test_a_boefje_pop_stops_at_the_first_partition_that_gave_a_batch():
    batches, popped = run(plans.pop(three(), "boefje", limit=10), [["only"]])
    assert len(batches) == 1 and popped == ["only"]


def test_a_pop_that_cannot_match_asks_nothing():
    assert run(plans.pop(three(), "normalizer", limit=0)) == ([], [])
    impossible = {"filters": [{"column": "organisation", "operator": "in", "value": []}]}
    assert run(plans.pop(three(), "boefje", impossible)) == ([], [])


def test_an_unknown_queue_is_not_found_before_any_round_trip():
    for plan in (plans.pop(three(), "nope", limit=0), plans.qsize(three(), "nope"), plans.reap(three(), "nope")):
        with pytest.raises(NotFound):
            plan.send(None)


def test_peek_asks_every_partition_at_once_and_merges_in_queue_order():
    a, b, c = (TASK_ID[:-1] + n for n in "312")  # the id breaks the tie of priority and time
    [batch], peeked = run(plans.peek(three(), "normalizer", limit=2), [[record(c)], [record(a, "1")], [record(b)]])
    assert partitions_of(batch) == [("normalizer", p) for p in range(3)]
    assert [r.id for r in peeked] == [a, b]


def test_patch_goes_to_every_partition_of_every_queue_at_once():
    replies = [None] * 9
    replies[4] = record()
    [batch], patched = run(plans.patch(three(), TASK_ID, {"status": "completed"}), replies)
    assert sorted(partitions_of(batch)) == sorted((q, p) for q in ("boefje", "normalizer", "report") for p in range(3))
    assert patched is replies[4]
    assert run(plans.patch(three(), TASK_ID, {"status": "completed"}), [None] * 9)[1] is None


def test_extend_asks_the_queues_partitions_at_once_or_the_one_named():
    [batch], expiry = run(plans.extend_lease(three(), "boefje", TASK_ID, "t", 5), [None, 1234, None])
    assert partitions_of(batch) == [("boefje", p) for p in range(3)] and expiry == 1234
    [batch], _ = run(plans.extend_lease(three(), "boefje", TASK_ID, "t", 5, partition=2), [99])
    assert partitions_of(batch) == [("boefje", 2)]
    with pytest.raises(NotFound, match="task not leased"):
        run(plans.extend_lease(three(), "boefje", TASK_ID, "t", 5), [None, None, None])


def test_a_hand_back_asks_every_partition_of_the_queue_at_once():
    [batch], requeued = run(plans.requeue(three(), "boefje", TASK_ID, "h"), [None, record(), None])
    assert partitions_of(batch) == [("boefje", p) for p in range(3)] and requeued.id == TASK_ID


def test_a_deleted_schedule_is_unlinked_in_every_partition_of_its_tasks_queues_at_once():
    tasks = [("boefje", TASK_ID), ("report", TASK_ID), ("boefje", "t2")]
    [batch], unlinked = run(plans.unlink_schedule(three(), "s", tasks), [1, 0, 0, 0, 1, 0])
    assert sorted(partitions_of(batch)) == sorted((q, p) for q in ("boefje", "report") for p in range(3))
    assert unlinked == 2
    assert run(plans.unlink_schedule(three(), "s", [])) == ([], 0)


def test_reap_and_forget_sum_over_every_partition_of_the_queue():
    [batch], counts = run(plans.reap(three(), "report"), [(1, 0), (2, 1), (0, 0)])
    assert partitions_of(batch) == [("report", p) for p in range(3)] and counts == (3, 1)
    [batch], dropped = run(plans.forget(three(), "report", [(TASK_ID, "5")]), [1, 0, 0])
    assert len(batch) == 3 and dropped == 1
    [batch], _ = run(plans.forget(three(), "report", [(TASK_ID, "5")], partition=1), [1])
    assert partitions_of(batch) == [("report", 1)]
    assert run(plans.forget(three(), "report", [])) == ([], 0)


def test_get_and_locate_read_every_partition_of_every_queue_in_one_round_trip():
    layout = three().layout
    replies = [None] * 18
    replies[8], replies[9] = b'{"id":"00000000-0000-4000-8000-000000000001","scheduler_id":"normalizer","organisation":"o","priority":"1","status":"queued","type":"normalizer","created_at":"0","modified_at":"0","pk":"09223372036854775809"}', b"{}"
    [batch], found = run(plans.get(layout, TASK_ID), replies)
    assert all(isinstance(call, Command) and call.args[0] == "HGET" for call in batch) and len(batch) == 18
    assert found.id == "00000000-0000-4000-8000-000000000001" and found.data == "{}"
    replies[8] = b'{"o":"o","p":"1","s":"queued","c":"0"}'  # the short form: its key and queue name it
    [batch], found = run(plans.get(layout, TASK_ID), replies)
    assert (found.id, found.scheduler_id, found.type, found.data) == (TASK_ID, "normalizer", "normalizer", "{}")
    [batch], where = run(plans.locate(layout, TASK_ID), [0, 0, 0, 0, 1, 0, 0, 0, 0])
    assert len(batch) == 9 and (where.queue_id, where.partition) == ("normalizer", 1)


def test_qsize_and_last_activity_read_each_partition_of_the_queue_once():
    # per partition: on the queue, waiting in limit groups, group heads placed on the queue
    [batch], size = run(plans.qsize(three(), "boefje"), [2, 0, None, 0, 0, None, 5, 3, b"1"])
    assert [c.args[0] for c in batch] == ["ZCARD", "ZCARD", "HGET"] * 3 and size == 9
    [batch], last = run(plans.last_activity_us(three(), "boefje"), [b"10", None, b"30"])
    assert len(batch) == 3 and last == 30


def test_a_changed_partition_count_is_refused_while_the_old_partitions_hold_tasks():
    layout = QueueLayout(prefix="rs", partitions=2)
    assert run(plans.check_layout(layout), [True, None]) == ([[Command(("SET", "rs:layout", 2, "NX")), Command(("GET", "rs:layout"))]], None)
    with pytest.raises(RuntimeError, match="hold tasks in 3 partitions"):
        run(plans.check_layout(layout), [None, b"3"], [0] * 8 + [1])
    batches, _ = run(plans.check_layout(layout), [None, b"3"], [0] * 9, [True])
    assert batches[-1] == [Command(("SET", "rs:layout", 2))]


def test_the_first_error_of_a_batch_reaches_the_caller():
    from redisched.queue.driver import results

    calls = three().reap("report"), three().reap("report")
    with pytest.raises(Conflict):
        results(calls, [[0, 0], Conflict("x")])


def test_the_pipeliner_merges_no_more_pushes_than_one_push_run_takes():
    from redisched.queue.commands import PUSHES_PER_RUN
    from redisched.queue.pipeliner import MAX_BATCH
    from redisched.queue.scripts import load

    assert MAX_BATCH <= PUSHES_PER_RUN
    assert f"PUSH_ARGS, PUSHES_MAX = 12, {PUSHES_PER_RUN}" in load("push").source
