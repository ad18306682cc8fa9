"""Every queue operation as a plan (see calls.py): a generator that yields batches of calls
and returns the operation's result. The fan-out lives here: which queues and partitions an
operation asks, in how many round trips. Nothing here touches Redis: the facades
(queue.py, client.py) hand a plan to their driver (driver.py), and tests step through a plan
by hand (tests/unit/test_queue_plans.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from redisched import filters
from redisched.errors import BadRequest, NotFound, SchedulerError
from redisched.memo import BoundedMemo
from redisched.models import FINISHED
from redisched.limit_rules import LimitRule, RuleSet
from redisched.queue.calls import Command, Plan, ScriptCall
from redisched.queue.commands import PUSHES_PER_RUN, MirrorElsewhere, QueueCommands, pops_one_batch, push_outcomes
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout
from redisched.queue.places import TaskPlaces
from redisched.queue.records import TaskRecord, decode_record
from redisched.queue.scripts import library

log = logging.getLogger(__name__)

FilterArg = dict[str, Any] | filters.Node | None


def as_node(request: FilterArg) -> filters.Node | None:
    """A filter as the API parses it, from a FilterRequest dict or an already parsed tree. A
    runner passes the same dict on every pop: its tree is parsed once (keyed by its JSON), so
    the queue also reuses the tree's compiled form (commands.py)."""
    if not isinstance(request, dict):
        return request
    try:
        key = _encode(request)
    except (TypeError, ValueError, OverflowError):  # not JSON: the parser says why
        return filters.parse_filter_request(request)
    return _parsed.get(key, lambda: filters.parse_filter_request(request))


_parsed: BoundedMemo[filters.Node] = BoundedMemo(size=256, max_key_bytes=16_384)
_encode = msgspec.json.Encoder().encode


def push(commands: QueueCommands, scheduler_id: str, **task: Any) -> Plan[TaskRecord]:
    """Into the partition of the task's hash (twins always meet in one script). A partition
    that follows newer limit rules sends the push back: the rules are read and it goes again."""
    for _ in range(PUSH_TRIES):
        call = commands.push(scheduler_id, **task)
        mirror = None
        if isinstance(call, MirrorElsewhere):  # a limited task away from its hash's partition
            [entry] = yield [Command(("HGET", call.key, call.hash))]
            mirror = (entry.decode() if isinstance(entry, bytes) else entry) or ""
            call = commands.push(scheduler_id, mirror=mirror, **task)
        [record] = yield [call]
        if record is None:
            yield from read_limits(commands)
            continue
        if mirror == "" and record.schedule_id is not None:  # the push made the schedule: mirror it
            mirror_key = commands.layout.for_hash(scheduler_id, record.hash).schedules
            yield [Command(("HSETNX", mirror_key, record.hash, f"{record.schedule_id}|1"))]
        return record
    raise RuntimeError("the limit rules kept changing while a task was pushed")


PUSH_TRIES = 3


def push_many(
    commands: QueueCommands, scheduler_id: str, tasks: list[dict[str, Any]]
) -> Plan[list[TaskRecord | SchedulerError]]:
    """Many pushes, each as ``push`` would do it alone, in order: one outcome per task, its
    record or the error its push alone would raise (BadRequest, Conflict, QueueFull). The
    pushes of one partition go as runs of up to PUSHES_PER_RUN in one script call each
    (lua/push.lua), one run per partition per round trip, so a later push sees the earlier
    ones (a twin pushed before it is a queued twin) on a cluster too."""
    commands.scheduler(scheduler_id)
    outcomes: list[Any] = [None] * len(tasks)
    waiting = list(range(len(tasks)))
    mirrors: dict[int, str] = {}
    for _ in range(PUSH_TRIES):
        calls: dict[int, ScriptCall[Any]] = {}
        elsewhere: dict[int, MirrorElsewhere] = {}
        for i in waiting:
            try:
                call = commands.push(scheduler_id, **tasks[i])
            except BadRequest as exc:
                outcomes[i] = exc
                continue
            if isinstance(call, MirrorElsewhere):
                elsewhere[i] = call
            else:
                calls[i] = call
        if elsewhere:  # limited tasks away from their hash's partition: read their mirrors
            entries = yield [Command(("HGET", call.key, call.hash)) for call in elsewhere.values()]
            for i, entry in zip(elsewhere, entries):
                mirrors[i] = (entry.decode() if isinstance(entry, bytes) else entry) or ""
                calls[i] = commands.push(scheduler_id, mirror=mirrors[i], **tasks[i])  # type: ignore[assignment]
        stale: list[int] = []
        for round_runs in _push_rounds(sorted(calls.items())):
            replies = yield [run for run, _ in round_runs]
            for (_, members), reply in zip(round_runs, replies):
                for i, outcome in zip(members, reply):
                    if outcome is None:
                        stale.append(i)
                    outcomes[i] = outcome
        if not stale:
            break
        yield from read_limits(commands)
        waiting = sorted(stale)
    else:
        raise RuntimeError("the limit rules kept changing while tasks were pushed")
    made = [
        outcome for i, outcome in enumerate(outcomes)
        if mirrors.get(i) == "" and isinstance(outcome, TaskRecord) and outcome.schedule_id is not None
    ]  # fmt: skip
    if made:  # pushes away from their hash's partition made schedules: mirror them
        yield [
            Command(("HSETNX", commands.layout.for_hash(scheduler_id, r.hash).schedules, r.hash, f"{r.schedule_id}|1"))
            for r in made
        ]
    return outcomes


def _push_rounds(
    calls: list[tuple[int, ScriptCall[Any]]],
) -> list[list[tuple[ScriptCall[list[Any]], list[int]]]]:
    """Push calls (task index, call), in task order, as rounds of runs: each run pushes up to
    PUSHES_PER_RUN tasks of one partition (a push too large to merge runs alone), each round
    holds at most one run per partition, and a partition's runs keep its tasks' order."""
    by_partition: dict[str, list[tuple[ScriptCall[list[Any]], list[int]]]] = {}
    for i, call in calls:
        runs = by_partition.setdefault(call.keys[0], [])
        last = runs[-1] if runs else None
        if (
            last is None or call.merge_key is None or last[0].merge_key is None
            or len(last[1]) >= PUSHES_PER_RUN
        ):  # fmt: skip
            runs.append((call, [i]))  # type: ignore[arg-type]
        else:
            last[1].append(i)
    calls_of = dict(calls)
    rounds: list[list[tuple[ScriptCall[list[Any]], list[int]]]] = []
    for runs in by_partition.values():
        for at, (first, members) in enumerate(runs):
            args = [arg for i in members for arg in calls_of[i].args] if len(members) > 1 else first.args
            run = ScriptCall(first.script, first.keys, args, push_outcomes)
            if at == len(rounds):
                rounds.append([])
            rounds[at].append((run, members))
    return rounds


def waiting_on_object(
    commands: QueueCommands, scheduler_id: str, organisation: str, input_ooi: str, limit: int
) -> Plan[list[str]]:
    """Ids of queued tasks of limit groups on this organisation's object (at most ``limit``
    per partition), those waiting past their group's head included (limobj, keys.py)."""
    prefix = f"{organisation}\0{input_ooi}\0"
    calls = [
        Command(("ZRANGE", keys.limobj, f"[{prefix}", f"({organisation}\0{input_ooi}\1", "BYLEX", "LIMIT", 0, limit))
        for keys in _queue(commands, scheduler_id)
    ]
    found = yield calls
    members = (member.decode() if isinstance(member, bytes) else member for part in found for member in part)
    return [member[len(prefix) :] for member in members]


def read_limits(commands: QueueCommands) -> Plan[RuleSet]:
    """The limit rules Redis holds (as this process adopts them), or the process's own."""
    [stored] = yield [Command(("HMGET", commands.layout.limit_rules_key, "version", "rules", "source"))]
    if stored[0] is not None:
        try:
            commands.rules.adopt(RuleSet.stored(*stored))
        except ValueError as exc:  # not what store_rules.lua writes: the next replace heals it
            log.error("limit rules in %s unreadable, keeping this process's: %s", commands.layout.limit_rules_key, exc)
    return commands.rules.current


def replace_limits(commands: QueueCommands, rules: tuple[LimitRule, ...], source: str = "admin") -> Plan[RuleSet]:
    """Put these rules in force: stored under a new version (store_rules.lua: it only grows,
    concurrent replaces are ordered there), then followed by every partition of the boefje
    queue. A process pushing with older rules is sent back by the partition (push.lua) and
    reads them."""
    [version] = yield [commands.store_rules(rules, source)]
    rule_set = RuleSet(rules, version, source)
    yield [commands.replace_rules(rule_set, keys.partition) for keys in commands.layout.of("boefje")]
    commands.rules.adopt(rule_set)
    return rule_set


def start_limits(commands: QueueCommands) -> Plan[RuleSet]:
    """At start: REDISCHED_LIMITS (the layout's rules) is put in force unless Redis holds the
    same, or rules set by an admin (those stay, and a differing REDISCHED_LIMITS is logged)."""
    stored = yield from read_limits(commands)
    mine = commands.layout.limits
    if stored.version != "0" and (stored.rules == mine or stored.source == "admin"):
        if stored.rules != mine:
            log.warning("limit rules set by an admin are in force; REDISCHED_LIMITS is not applied")
        return stored
    return (yield from replace_limits(commands, mine, "env"))


def pop(
    commands: QueueCommands,
    scheduler_id: str,
    filters_node: FilterArg = None,
    limit: int | None = None,
    token: str | None = None,
    *,
    start: int = 0,
    status: str = "dispatched",
    places: TaskPlaces | None = None,
) -> Plan[list[TaskRecord]]:
    """Up to ``limit`` tasks (None: up to POP_MAX), best first within each partition: from
    partition ``start`` on, one after the other, each asked only for what is still missing.
    A boefje pop stops at the first partition that gave a batch. ``status``: what the
    popped tasks become, "dispatched" or "running" (commands.py, QueueCommands.pop).
    ``places`` notes where each popped task lives, for a later token-less patch."""
    queue_id = commands.scheduler(scheduler_id).id
    node, partitions = as_node(filters_node), commands.layout.partitions
    wanted, popped = commands.limit_of(limit), []
    for step in range(partitions):
        if len(popped) >= wanted or (popped and pops_one_batch(scheduler_id)):
            break
        partition = (start + step) % partitions
        call = commands.pop(scheduler_id, filters_node=node, limit=wanted - len(popped), token=token,
                            partition=partition, status=status)
        if call is None:  # nothing can match
            break
        [got] = yield [call]
        _note_places(places, got, queue_id, partition)
        popped += got
    return popped


def _note_places(places: TaskPlaces | None, records: list[TaskRecord], queue_id: str, partition: int) -> None:
    if places is not None:
        for record in records:
            places.note(record.id, queue_id, partition)


def peek(commands: QueueCommands, scheduler_id: str, filters_node: FilterArg = None, limit: int = 10) -> Plan[list[TaskRecord]]:
    """The first ``limit`` queued tasks in queue order, across every partition (one round trip)."""
    node = as_node(filters_node)
    calls = [
        commands.peek(scheduler_id, filters_node=node, limit=limit, partition=keys.partition)
        for keys in _queue(commands, scheduler_id)
    ]
    if calls[0] is None:  # nothing can match, or limit 0
        return []
    found = yield calls
    if len(found) == 1:
        return found[0]
    return sorted((record for part in found for record in part), key=lambda r: r.order)[:limit]


def patch(
    commands: QueueCommands,
    task_id: uuid.UUID | str,
    changes: dict[str, Any],
    token: str | None = None,
    places: TaskPlaces | None = None,
) -> Plan[TaskRecord | None]:
    """Patch a live task wherever it is queued; None when no queue has it. The partition a
    lease token names, or without one the partition ``places`` saw it in, is asked first
    (one call); should it not hold the task (a hint of another process's pop, a task put back
    elsewhere by a restore after Redis lost it), the others after. With neither, every queue
    partition at once (one round trip, per node on a cluster): those that lack the task
    answer E_NOT_FOUND, which costs Redis one HGET."""
    task_id = str(task_id)
    named = commands.lease_place(token)
    first = named or (places.of(task_id) if places is not None else None)
    if first is not None:
        [record] = yield [commands.patch(first[0], task_id, changes, token=token, partition=first[1])]
        if record is not None:
            return _placed(places, record, first)
    return (yield from _patch_elsewhere(commands, task_id, changes, token, places, first, named is not None))


def _patch_elsewhere(
    commands: QueueCommands,
    task_id: str,
    changes: dict[str, Any],
    token: str | None,
    places: TaskPlaces | None,
    asked: tuple[str, int] | None,
    token_named: bool,
) -> Plan[TaskRecord | None]:
    """``patch`` at once in every partition but the one ``asked`` already: of that queue
    alone when the lease token named it (a task never changes queue, a restore may give it
    another partition), of every queue otherwise."""
    partitions = commands.layout.of(asked[0]) if token_named and asked else commands.layout.every()
    others = [keys for keys in partitions if (keys.queue_id, keys.partition) != asked]
    patched = (yield [
        commands.patch(keys.queue_id, task_id, changes, token=token, partition=keys.partition) for keys in others
    ]) if others else []  # the token's queue has one partition: nowhere else to look
    for keys, record in zip(others, patched):
        if record is not None:
            return _placed(places, record, (keys.queue_id, keys.partition))
    if places is not None:
        places.forget(task_id)
    return None


def _placed(places: TaskPlaces | None, record: TaskRecord | None, place: tuple[str, int]) -> TaskRecord | None:
    """The patched record; ``places`` keeps a live task's place and forgets a finished one's."""
    if places is not None and record is not None:
        if record.status in FINISHED:
            places.forget(record.id)
        else:
            places.note(record.id, *place)
    return record


def pop_next(
    commands: QueueCommands,
    task_id: uuid.UUID | str,
    changes: dict[str, Any],
    token: str | None,
    filters_node: FilterArg = None,
    limit: int | None = 1,
    *,
    start: int = 0,
    status: str = "dispatched",
    places: TaskPlaces | None = None,
) -> Plan[tuple[TaskRecord | None, list[TaskRecord]]]:
    """Finish and fetch: patch a live task, then pop the next ones from its queue. One script
    call when the lease token names the task's partition, or without one when ``places``
    knows it (lua/pop_next.lua; should that partition hold no match, the others are asked
    after); otherwise, or should that partition not hold the task (as in ``patch``), the
    patch, then a pop. (None, []) when no queue has the task."""
    commands.popped_lease_ms(status)  # a status no pop hands out is refused before the patch
    task_id = str(task_id)
    node, named = as_node(filters_node), commands.lease_place(token)
    place = named or (places.of(task_id) if places is not None else None)
    if place is None:
        record = yield from patch(commands, task_id, changes, token, places)
    else:
        queue_id, partition = place
        call = commands.pop_next(
            queue_id, task_id, changes, token=token, filters_node=node, limit=limit, partition=partition,
            status=status,
        )
        [(record, popped)] = yield [call]
        if record is not None:
            _placed(places, record, place)
            _note_places(places, popped, queue_id, partition)
            if not popped and commands.layout.partitions > 1:
                popped = yield from pop(commands, queue_id, node, limit, start=start, status=status, places=places)
            return record, popped
        # not where its token or this process's hint says: the other partitions are asked
        record = yield from _patch_elsewhere(commands, task_id, changes, token, places, place, named is not None)
    if record is None:
        return None, []
    return record, (yield from pop(commands, record.scheduler_id, node, limit, start=start, status=status,
                                   places=places))


def requeue(
    commands: QueueCommands, scheduler_id: str, task_id: uuid.UUID | str, task_hash: str
) -> Plan[TaskRecord | None]:
    """Requeue a dispatched task handed back unstarted (same id, same hash), wherever in the
    queue's partitions it is (all asked at once); None when the queue holds no such task."""
    calls = [
        commands.requeue(scheduler_id, str(task_id), task_hash, partition=keys.partition)
        for keys in _queue(commands, scheduler_id)
    ]
    requeued = yield calls
    return next((record for record in requeued if record is not None), None)


def unlink_schedule(
    commands: QueueCommands, schedule_id: uuid.UUID | str, tasks: list[tuple[str, str]]
) -> Plan[int]:
    """A schedule was deleted: its live tasks, (scheduler id, task id), no longer name it.
    Each is looked for in every partition of its queue (a PATCH may have moved its hash
    away from the partition it lives in), all in one round trip. How many were unlinked."""
    by_queue: dict[str, list[str]] = {}
    for scheduler_id, task_id in tasks:
        by_queue.setdefault(commands.scheduler(scheduler_id).id, []).append(str(task_id))
    calls = [
        call
        for queue_id, task_ids in by_queue.items()
        for keys in commands.layout.of(queue_id)
        for call in commands.unlink(queue_id, str(schedule_id), task_ids, partition=keys.partition)
    ]
    return sum((yield calls)) if calls else 0


def extend_lease(
    commands: QueueCommands,
    scheduler_id: str,
    task_id: uuid.UUID | str,
    token: str,
    seconds: float,
    partition: int | None = None,
) -> Plan[int]:
    """The lease's new expiry (ms), asked of ``partition``; else of the partition the pop's
    token names, the others only should it not hold the task (as in ``patch``); else of every
    partition of the queue at once (those that lack it answer E_NOT_FOUND)."""
    place = commands.lease_place(token)
    every = [keys.partition for keys in _queue(commands, scheduler_id)]
    if partition is not None:
        rounds = [[partition]]
    elif place is not None and place[0] == commands.scheduler(scheduler_id).id:
        rounds = [[place[1]], [p for p in every if p != place[1]]]
    else:
        rounds = [every]
    for partitions in filter(None, rounds):
        calls = [commands.extend_lease(scheduler_id, str(task_id), token, seconds, partition=p) for p in partitions]
        expiries = yield calls
        expiry = next((found for found in expiries if found is not None), None)
        if expiry is not None:
            return expiry
    raise NotFound("task not leased")


def reap(commands: QueueCommands, scheduler_id: str, max_count: int = 1000) -> Plan[tuple[int, int]]:
    """Expired leases taken back in every partition of the queue: (requeued, failed)."""
    calls = [commands.reap(scheduler_id, max_count=max_count, partition=keys.partition) for keys in _queue(commands, scheduler_id)]
    counts = yield calls
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def forget(
    commands: QueueCommands, scheduler_id: str, items: list[tuple[str, str]], partition: int | None = None
) -> Plan[int]:
    """Drop finished tasks at their stored rev (the snapshotter's, once Postgres has them);
    ``partition`` None: from every partition of the queue. How many left Redis."""
    if not items:
        return 0
    partitions = [partition] if partition is not None else [keys.partition for keys in _queue(commands, scheduler_id)]
    return sum((yield [commands.forget(scheduler_id, items, partition=p) for p in partitions]))


def restore(commands: QueueCommands, record: TaskRecord) -> Plan[bool]:
    """Put a task Postgres holds back live, in the partition of its hash; False when a twin
    is queued."""
    [restored] = yield from restore_all(commands, [record])
    return restored


def restore_all(commands: QueueCommands, records: list[TaskRecord]) -> Plan[list[bool]]:
    """Several tasks back live in one batch (reconciliation, import-mula): one answer each.
    A task some partition of its queue still holds is left alone (False), wherever that is:
    one whose hash a PATCH changed lives on away from its hash's partition, and restoring it
    there (when that partition lost data) would make a second live copy."""
    if not records:
        return []
    held = yield from _held_live(commands, records)
    missing = [record for record, found in zip(records, held) if not found]
    restored = iter((yield [commands.restore(record) for record in missing]) if missing else [])
    return [False if found else next(restored) for found in held]


def _held_live(commands: QueueCommands, records: list[TaskRecord]) -> Plan[list[bool]]:
    """Per record, whether a partition of its queue holds its task (one round trip). With one
    partition, restore.lua's own check is all there is to it."""
    if commands.layout.partitions == 1:
        return [False] * len(records)
    places = [commands.layout.of(commands.scheduler(record.scheduler_id).id) for record in records]
    replies = iter((yield [Command(("HEXISTS", keys.tasks, record.id)) for record, every in zip(records, places)
                           for keys in every]))
    return [any([bool(next(replies)) for _ in every]) for every in places]


def ack_events(commands: QueueCommands, keys: QueueKeys, group: str, entry_ids: list[str]) -> Plan[str]:
    """The snapshotter's: entries of one partition's stream committed to Postgres."""
    [acked] = yield [commands.ack_events(keys.queue_id, group, entry_ids, partition=keys.partition)]
    return acked


# --- reads -----------------------------------------------------------------------------------


def get(layout: QueueLayout, task_id: uuid.UUID | str) -> Plan[TaskRecord | None]:
    """The live task with this id, from whichever queue partition holds it (one round trip)."""
    calls = [Command(("HGET", keys.key(name), str(task_id))) for keys in layout.every() for name in ("tasks", "data")]
    replies = yield calls
    for keys, raw, data in zip(layout.every(), replies[0::2], replies[1::2]):
        if raw is not None and (record := _readable(task_id, keys.queue_id, raw, data)) is not None:
            return record
    return None


def _readable(task_id: uuid.UUID | str, queue_id: str, raw: Any, data: Any) -> TaskRecord | None:
    """A record that does not decode counts as none (logged): the next script that meets it
    moves it aside (lua/includes/common.lua)."""
    try:
        record = decode_record(raw, data, task_id=str(task_id), queue_id=queue_id)
        record.to_task()
        if not record.pk:
            raise ValueError(f"its priority {record.priority} is past int64: it has no order key")
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, AttributeError) as exc:
        log.warning("task %s: its record in Redis does not decode (%s); treated as not live", task_id, exc)
        return None
    return record


def set_aside_counts(layout: QueueLayout) -> Plan[dict[str, tuple[int, int]]]:
    """Per queue: records the scripts moved to quarantine, stray members they removed."""
    partitions = layout.every()
    replies = yield [Command(("HMGET", keys.meta, "quarantined", "stray_members")) for keys in partitions]
    counts: dict[str, tuple[int, int]] = {}
    for keys, (records, members) in zip(partitions, replies):
        before = counts.get(keys.queue_id, (0, 0))
        counts[keys.queue_id] = (before[0] + int(records or 0), before[1] + int(members or 0))
    return counts


def locate(layout: QueueLayout, task_id: uuid.UUID | str) -> Plan[QueueKeys | None]:
    """The queue partition that holds this live task."""
    partitions = layout.every()
    found = yield [Command(("HEXISTS", keys.tasks, str(task_id))) for keys in partitions]
    return next((keys for keys, hit in zip(partitions, found) if hit), None)


def qsize(commands: QueueCommands, scheduler_id: str) -> Plan[int]:
    """Tasks queued (not leased) in every partition of the queue: on it, or waiting in their
    limit group (of which the placed heads are on it already)."""
    partitions = _queue(commands, scheduler_id)
    counts = yield [
        command
        for keys in partitions
        for command in (
            Command(("ZCARD", keys.queue)),
            Command(("ZCARD", keys.limq)),
            Command(("HGET", keys.meta, "limited_placed")),
        )
    ]
    return sum(int(queued) + int(waiting) - int(placed or 0) for queued, waiting, placed in zip(*[iter(counts)] * 3))


def last_activity_us(commands: QueueCommands, scheduler_id: str) -> Plan[int | None]:
    """When any partition of the queue last changed (µs since the epoch)."""
    values = yield [Command(("HGET", keys.meta, "last_activity")) for keys in _queue(commands, scheduler_id)]
    return max((int(value) for value in values if value is not None), default=None)


# --- fair pop across organisations (lua/includes/fair.lua) ---------------------------------


class OrganisationShare(msgspec.Struct):
    """One organisation's place in the fair pop of a queue (all its partitions)."""

    organisation: str
    depth: int  # tasks on the queue (a limited group's waiting tasks past its head not counted)
    served: int  # tasks handed out with fairness on
    share_served: float | None  # of every organisation's served tasks (None: none served yet)
    weight: float
    virtual_time: float  # tasks served / weight, largest over the partitions


def set_weights(layout: QueueLayout, weights: dict[str, float]) -> Plan[None]:
    """Organisations' weights, in every partition of every queue (where the scripts read them)."""
    if weights:
        pairs = [value for org, weight in weights.items() for value in (org, repr(float(weight)))]
        yield [Command(("HSET", keys.fair_key("weights"), *pairs)) for keys in layout.every()]


def reset_weight(layout: QueueLayout, organisation: str) -> Plan[None]:
    """Back to the default weight (1) in every partition of every queue."""
    yield [Command(("HDEL", keys.fair_key("weights"), organisation)) for keys in layout.every()]


def weights(layout: QueueLayout) -> Plan[dict[str, float]]:
    """The weights set (an organisation not named weighs 1), as the first queue's first
    partition holds them (set_weights writes them all alike)."""
    [stored] = yield [Command(("HGETALL", layout.every()[0].fair_key("weights")))]
    return {_text(org): float(weight) for org, weight in stored.items()}


def organisation_shares(commands: QueueCommands, scheduler_id: str, max_orgs: int = 1000) -> Plan[list[OrganisationShare]]:
    """Per organisation with work (the first ``max_orgs`` by virtual time in each partition)
    or served: depth, served, share, weight, virtual time. Two round trips."""
    partitions = _queue(commands, scheduler_id)
    first = yield [
        command
        for keys in partitions
        for command in (
            Command(("ZRANGE", keys.fair_key("orgs"), "[q\0", "(q\1", "BYLEX", "LIMIT", 0, max_orgs)),
            Command(("HGETALL", keys.fair_key("served"))),
        )
    ] + [Command(("HGETALL", partitions[0].fair_key("weights")))]
    weights = {_text(org): float(w) for org, w in first[-1].items()}
    served: dict[str, int] = {}
    active: list[set[str]] = []
    for i in range(len(partitions)):
        listed, served_here = first[2 * i], first[2 * i + 1]
        active.append({_text(member).split("\0", 2)[2] for member in listed})
        for org, n in served_here.items():
            served[_text(org)] = served.get(_text(org), 0) + int(n)
    orgs = sorted(set().union(*active) | set(served))
    if not orgs:
        return []
    second = yield [
        command
        for keys, here in zip(partitions, active)
        for command in (
            *(Command(("ZLEXCOUNT", keys.index("org"), f"[{org}\0", f"({org}\1")) for org in sorted(here)),
            Command(("HMGET", keys.fair_key("vt"), *orgs)),
        )
    ]
    depth: dict[str, int] = {}
    vt: dict[str, float] = {}
    at = 0
    for here in active:
        for org in sorted(here):
            depth[org] = depth.get(org, 0) + int(second[at])
            at += 1
        for org, value in zip(orgs, second[at]):
            vt[org] = max(vt.get(org, 0.0), float(value or 0))
        at += 1
    total = sum(served.values())
    return [
        OrganisationShare(
            organisation=org,
            depth=depth.get(org, 0),
            served=served.get(org, 0),
            share_served=served.get(org, 0) / total if total else None,
            weight=weights.get(org, 1.0),
            virtual_time=vt.get(org, 0.0),
        )
        for org in orgs
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def load_functions() -> Plan[None]:
    """FUNCTION LOAD REPLACE of this version's library (queue/scripts.py): the service's own
    connection does it at start; the direct client's ACL user may not, and relies on it."""
    yield [Command(library().load_command())]


def index_pairs(commands: QueueCommands) -> Plan[int]:
    """Build the (boefje id, image) pair index where queues of an earlier version lack it
    (lua/index_pairs.lua). How many steps it took (1: all were ready)."""
    return (yield from _every_partition_until_done(commands, commands.index_pairs))


def index_orders(commands: QueueCommands) -> Plan[int]:
    """Move the tasks queues of an earlier version hold under text order keys to packed ones
    (lua/index_orders.lua). How many steps it took (1: none was left)."""
    return (yield from _every_partition_until_done(commands, commands.index_orders))


def index_fair(commands: QueueCommands) -> Plan[int]:
    """With fairness on, bring the fair pop's structures up to date with the queues (tasks
    queued while it was off; lua/index_fair.lua); off, mark them stale. How many steps it took."""
    return (yield from _every_partition_until_done(commands, commands.index_fair))


def _every_partition_until_done(commands: QueueCommands, step: Callable[..., ScriptCall[bool]]) -> Plan[int]:
    """Run a bounded step script on every partition at once, again on those not done yet,
    until all are. How many rounds it took."""
    waiting, rounds = commands.layout.every(), 0
    while waiting:
        rounds += 1
        done = yield [step(keys.queue_id, partition=keys.partition) for keys in waiting]
        waiting = [keys for keys, finished in zip(waiting, done) if not finished]
    return rounds


def check_layout(layout: QueueLayout) -> Plan[None]:
    """Record the partition count the queues are made with; refuse another one while the
    queues made with the old count still hold tasks (they would be out of sight)."""
    key, wanted = layout.layout_key, layout.partitions
    [created, stored] = yield [Command(("SET", key, wanted, "NX")), Command(("GET", key))]
    if created or int(stored or wanted) == wanted:
        return
    stored = int(stored)
    old = QueueLayout(layout.prefix, stored)
    if sum((yield [Command(("HLEN", keys.tasks)) for keys in old.every(layout.queue_ids)])):
        raise RuntimeError(
            f"the queues hold tasks in {stored} partitions: REDISCHED_PARTITIONS={wanted} would hide them; "
            f"set it back to {stored}, or empty the queues first"
        )
    yield [Command(("SET", key, wanted))]


def _queue(commands: QueueCommands, scheduler_id: str) -> list[QueueKeys]:
    """Every partition of the queue (NotFound for an unknown scheduler)."""
    return commands.layout.of(commands.scheduler(scheduler_id).id)
