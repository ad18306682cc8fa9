"""Each queue script's call, built without touching Redis, and its reply read back.

``QueueCommands`` holds no connection: the rules live here once (validation, the push id and
hash rules, the pop limit rules, error codes) and plans.py composes these calls into whole
operations over queues and partitions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from redisched import filters, limit_rules, limits
from redisched.errors import BadRequest, Conflict, NotFound, QueueFull, SchedulerError, ScriptError, StaleLease
from redisched.memo import BoundedMemo
from redisched.models import SCHEDULERS, STATUSES, MalformedPayload, Payload, SchedulerType, check_pushed_payload, datetime_to_us
from redisched.models import with_aware_datetimes
from redisched.queue import indexes
from redisched.queue.calls import ScriptCall
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout
from redisched.queue.records import TaskRecord, decode_record, order_time, priority_key
from redisched.queue.scripts import load
from redisched.queue.randomness import fresh_uuid, random_hex

T = TypeVar("T")

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UNLINK_BATCH = 500  # task ids per unlink script call
MAX_LEASE_SECONDS = 365 * 86400  # a lease must end at a date Python, Lua and Postgres can hold
POP_MAX = 1000  # the most tasks one pop hands out (mula's page size)
INDEX_PAIRS_BATCH = 1000  # boefje index members per index_pairs script call
INDEX_FAIR_BATCH = 500  # queue members per index_fair script call
INDEX_ORDERS_BATCH = 250  # members with a text order key per index_orders script call (~7 ms of Redis)
PUSHES_PER_RUN = 256  # the most pushes one push script run takes (lua/push.lua)
# A push merges with others into one script run (the pipeliner's, push_many's) only when its
# record and data together are at most this many bytes (OpenKAT's are 0.6-1.2 KiB); a larger
# one runs alone, so a run of PUSHES_PER_RUN pushes carries at most ~0.5 MiB and costs Redis a
# few times what a run of ordinary pushes does (8 KiB: up to ~60 ms a run, on a loaded machine).
PUSH_MERGE_MAX_BYTES = 2 * 1024

MALFORMED = "malformed item: "  # the contract's push refusal, then what is wrong


@dataclass(frozen=True)
class MirrorElsewhere:
    """A push's schedule mirror entry is in another partition than the push (``key``, field
    ``hash``): read it, then build the push with it (plans.push)."""

    key: str
    hash: str


@dataclass(frozen=True)
class QueueCommands:
    layout: QueueLayout
    # The limit rules this process pushes with: the layout's until Redis holds newer ones.
    rules: limit_rules.RulesInForce = field(init=False, compare=False)
    _push_constants: dict[str, tuple[int, str, str]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", limit_rules.RulesInForce(self.layout.limits))
        object.__setattr__(self, "_push_constants", {})

    def keys(self, scheduler_id: str, partition: int = 0) -> QueueKeys:
        return self.layout.of(self.scheduler(scheduler_id).id)[partition]

    @staticmethod
    def scheduler(scheduler_id: str) -> SchedulerType:
        try:
            return SCHEDULERS[scheduler_id]
        except KeyError:
            raise NotFound(f"Scheduler {scheduler_id} not found") from None

    def _call(
        self, name: str, scheduler_id: str, args: list[Any], parse: Callable[[Any], T], partition: int = 0
    ) -> ScriptCall[T]:
        return ScriptCall(load(name), self.keys(scheduler_id, partition).all, args, parse)

    # --- push --------------------------------------------------------------------------------

    def push(
        self,
        scheduler_id: str,
        *,
        organisation: str,
        data: dict[str, Any],
        priority: int | None,
        task_id: uuid.UUID | str | None = None,
        item_scheduler_id: str | None = None,
        link_schedule: bool = True,
        refuse_live_twin: bool = False,
        plugin_rule: limit_rules.LimitRule | None = None,
        mirror: str | None = None,
    ) -> ScriptCall[TaskRecord | None] | MirrorElsewhere:
        """``link_schedule`` False: the task gets no schedule even on a queue that has them
        (boefjes that run only on object events, ``run_on``). ``refuse_live_twin``: a twin
        that is dispatched or running refuses the push too (the schedulers' rule; the API's
        contract lets only a queued twin refuse). ``plugin_rule``: the boefje's own
        rate-limit group (Katalogus). The reply is None when the partition follows newer
        limit rules than this process: read them (plans.push) and push again.

        With partitions, a task of a limited group goes to its group's partition, so one
        partition holds the group's state. The schedule mirror stays in the hash's partition:
        when that is another one, the answer is ``MirrorElsewhere`` (where to read it) and
        the push is built again with ``mirror``, that entry ("" for none)."""
        scheduler = self.scheduler(scheduler_id)
        if item_scheduler_id is not None and item_scheduler_id != scheduler_id:
            raise BadRequest("scheduler_id in item does not match the scheduler_id in the path")
        if not isinstance(priority, int) or isinstance(priority, bool) or priority == 0:
            raise BadRequest("malformed item")
        if not INT64_MIN <= priority <= INT64_MAX or not isinstance(data, dict):
            raise BadRequest("malformed item")
        data = with_aware_datetimes(data)
        try:
            payload = check_pushed_payload(scheduler_id, data)
        except MalformedPayload:
            raise BadRequest("malformed item") from None
        task_id, stored_data = _identity(scheduler, data, payload, task_id)
        limits.check_column("organisation", organisation, MALFORMED)
        limits.check_data(data, stored_data, prefix=MALFORMED)
        record = TaskRecord(
            id=task_id,
            scheduler_id=scheduler_id,
            organisation=organisation,
            priority=str(priority),
            status="queued",
            type=scheduler_id,
            hash=payload.hash(),
            created_at="0",
            modified_at="0",
            pk=priority_key(priority),
            ix=_checked_index_values(indexes.values_of_payload, organisation, payload),
        )
        rule_set = self.rules.current
        limited = scheduler_id == "boefje"
        group = _put_in_group(record, rule_set.rules, data, plugin_rule) if limited else None
        keys = self.layout.for_task(scheduler_id, record.hash, record.lg)
        links = scheduler.has_schedules and link_schedule
        elsewhere = False
        if self.layout.partitions > 1:
            mirror_keys = self.layout.for_hash(scheduler_id, record.hash)
            elsewhere = keys.partition != mirror_keys.partition
            if links and mirror is None and elsewhere:
                return MirrorElsewhere(mirror_keys.schedules, record.hash)
        maxsize_share, twin_policy, one_per_schedule = self._push_options(scheduler_id)
        encoded = limits.encode(record, "organisation", MALFORMED)
        args = [
            encoded,
            stored_data,
            maxsize_share,
            twin_policy,
            "1" if links else "0",
            fresh_uuid() if links else "",
            "1" if refuse_live_twin else "0",
            one_per_schedule,
            rule_set.version if limited else "",
            group.rule.key if group is not None else "",
            group.rule.spec if group is not None else "",
            (mirror or "-") if links and elsewhere else "",
        ]
        if len(encoded) + len(stored_data) > PUSH_MERGE_MAX_BYTES:
            return ScriptCall(load("push"), keys.all, args, _parse_push)
        return ScriptCall(load("push"), keys.all, args, _parse_push, ("push", keys.all[0]), _one_reply_each, _concatenated)

    def _push_options(self, scheduler_id: str) -> tuple[int, str, str]:
        """push.lua's ARGV[3], [4] and [8] for this queue, worked out once (the layout is frozen):
        each partition's share of maxsize, the twin policy, one task per schedule."""
        found = self._push_constants.get(scheduler_id)
        if found is None:
            options = self.layout.options_of(scheduler_id)
            share = -(-options.maxsize // self.layout.partitions)
            found = (share, options.twin_policy, "1" if self.layout.one_task_per_schedule else "0")
            self._push_constants[scheduler_id] = found
        return found

    def store_rules(self, rules: tuple[limit_rules.LimitRule, ...], source: str) -> ScriptCall[str]:
        """Store the limit rules in force; the reply is the version they got (store_rules.lua)."""
        args = [time.time_ns() // 1000, msgspec.json.encode(limit_rules.as_json(rules)), source]
        parse = lambda r: r.decode() if isinstance(r, bytes) else str(r)  # noqa: E731
        return ScriptCall(load("store_rules"), [self.layout.limit_rules_key], args, parse)

    def replace_rules(self, rule_set: limit_rules.RuleSet, partition: int) -> ScriptCall[bool]:
        """Make a partition of the boefje queue follow these rules (lua/rules.lua)."""
        args = [rule_set.version, *(item for pair in rule_set.specs.items() for item in pair)]
        return self._call("rules", "boefje", args, lambda r: r == 1, partition)

    # --- pop and peek ------------------------------------------------------------------------

    def pop(
        self,
        scheduler_id: str,
        *,
        filters_node: filters.Node | None = None,
        limit: int | None = None,
        token: str | None = None,
        partition: int = 0,
        status: str = "dispatched",
    ) -> ScriptCall[list[TaskRecord]] | None:
        """None: nothing can match, no need to ask Redis. ``status``: what the popped tasks
        become, "dispatched" (their runner patches "running" when it starts, as mula's do)
        or "running" (a worker that starts each task at once saves that call; its lease is
        the running one)."""
        self.scheduler(scheduler_id)
        lease_ms = self.popped_lease_ms(status)
        search = self._search(filters_node, limit)
        if search is None:
            return None
        dedup_batches = "1" if pops_one_batch(scheduler_id) else "0"
        args = [token or self.lease_token(scheduler_id, partition), dedup_batches, status, lease_ms, *search]
        keys = self.keys(scheduler_id, partition).all
        merge_key = (keys[0], *args[1:])
        return ScriptCall(load("pop"), keys, args, _parse_pop, merge_key, split_pop_replies, join_pop_args)

    def peek(
        self, scheduler_id: str, *, filters_node: filters.Node | None = None, limit: int = 10, partition: int = 0
    ) -> ScriptCall[list[TaskRecord]] | None:
        self.scheduler(scheduler_id)
        search = self._search(filters_node, limit)
        return None if search is None else self._call("peek", scheduler_id, search, _parse_records, partition)

    def _search(self, filters_node: filters.Node | None, limit: int | None) -> list[Any] | None:
        """The ARGV tail both pop and peek read (lua/includes/candidates.lua, search_args);
        None when nothing can match, so no round trip is needed."""
        limit = self.limit_of(limit)
        tail = _search_tail(filters_node, self.layout.scan_budget, self.layout.scan_time_us)
        if limit == 0 or tail is None:
            return None
        return [limit, *tail]

    def popped_lease_ms(self, status: str) -> int:
        if status == "dispatched":
            return self.layout.dispatch_lease_ms
        if status == "running":
            return self.layout.running_lease_ms
        raise BadRequest(f"a pop hands tasks out dispatched or running, not {status!r}")

    @staticmethod
    def limit_of(limit: int | None) -> int:
        if limit is None:
            return POP_MAX
        if limit < 0:
            raise BadRequest("limit must not be negative")
        return min(limit, POP_MAX)

    # --- patch, leases -----------------------------------------------------------------------

    def patch(
        self, scheduler_id: str, task_id: str, changes: dict[str, Any], *, token: str | None = None, partition: int = 0
    ) -> ScriptCall[TaskRecord | None]:
        """``changes`` are Task fields (API names and types). Returns None when the task is
        not live in this queue (the caller looks in the history). Patches of one partition
        waiting together may run as one script run (queue/pipeliner.py), each on its own."""
        args = [
            str(task_id),
            token or "",
            _encoded_changes(changes),
            self.layout.dispatch_lease_ms,
            self.layout.running_lease_ms,
        ]
        keys = self.keys(scheduler_id, partition).all
        merge_key = ("patch", keys[0], *args[3:])
        return ScriptCall(load("patch"), keys, args, _parse_patch_reply, merge_key, _one_reply_each, _concatenated)

    def pop_next(
        self,
        scheduler_id: str,
        task_id: str,
        changes: dict[str, Any],
        *,
        token: str | None = None,
        filters_node: filters.Node | None = None,
        limit: int | None = 1,
        partition: int = 0,
        status: str = "dispatched",
    ) -> ScriptCall[tuple[TaskRecord | None, list[TaskRecord]]]:
        """Patch a task, then pop the next ones from the same queue partition, in one script
        call (lua/pop_next.lua): a runner's "completed" that brings its next task. The patch
        as ``patch`` (None: not live in this partition, and nothing popped). Such calls of one
        partition with the same pop arguments may run as one script run (queue/pipeliner.py):
        each patch in turn, then one pop serving each caller whose patch went through.
        ``status``: what the popped tasks become, as in ``pop``."""
        patch = self.patch(scheduler_id, task_id, changes, token=token, partition=partition)
        pop = self.pop(scheduler_id, filters_node=filters_node, limit=limit, partition=partition, status=status)
        if pop is None:  # nothing can match: the patch alone
            return ScriptCall(patch.script, patch.keys, patch.args, lambda reply: (_parse_patch_reply(reply), []))
        merge_key = ("pop_next", patch.keys[0], *patch.args[3:], *pop.args[1:])
        return ScriptCall(load("pop_next"), patch.keys, [1, *patch.args, *pop.args], _parse_pop_next,
                          merge_key, _one_reply_each, _join_pop_next_args)

    def lease_token(self, scheduler_id: str, partition: int) -> str:
        """A fresh lease token that names where its task lives (``lease_place``), so a patch
        that carries it goes to that queue partition alone."""
        return f"{random_hex.take(16)}-{self.scheduler(scheduler_id).id}-{partition}"

    def lease_place(self, token: str | None) -> tuple[str, int] | None:
        """(queue id, partition) a token of ``lease_token`` names; None for any other token."""
        parts = (token or "").rsplit("-", 2)
        if len(parts) == 3 and parts[1] in SCHEDULERS and parts[2].isascii() and parts[2].isdigit():
            if int(parts[2]) < self.layout.partitions:
                return parts[1], int(parts[2])
        return None

    def requeue(
        self, scheduler_id: str, task_id: str, task_hash: str, *, partition: int = 0
    ) -> ScriptCall[TaskRecord | None]:
        """Put a dispatched task its runner hands back unstarted on its queue again, in its old
        place. None when this partition holds no dispatched task with this id and hash."""
        return self._call("requeue", scheduler_id, [str(task_id), task_hash], _parse_requeue, partition)

    def unlink(
        self, scheduler_id: str, schedule_id: str, task_ids: list[str], *, partition: int = 0
    ) -> list[ScriptCall[int]]:
        """Clear ``schedule_id`` on the live tasks among ``task_ids`` that still point at this
        (deleted) schedule: one call per UNLINK_BATCH ids, so each script's work stays bounded."""
        return [
            self._call("unlink", scheduler_id, [str(schedule_id), *task_ids[i : i + UNLINK_BATCH]], int, partition)
            for i in range(0, len(task_ids), UNLINK_BATCH)
        ]

    def extend_lease(
        self, scheduler_id: str, task_id: str, token: str, seconds: float, *, partition: int = 0
    ) -> ScriptCall[int | None]:
        """The lease's new expiry (ms); None when this partition has no lease of the task."""
        if not 0 < seconds <= MAX_LEASE_SECONDS:  # also refuses nan
            raise BadRequest(f"lease length must be positive and at most {MAX_LEASE_SECONDS} seconds")
        args = [str(task_id), token, int(seconds * 1000)]
        return self._call("extend", scheduler_id, args, _parse_extend, partition)

    def reap(self, scheduler_id: str, *, max_count: int = 1000, partition: int = 0) -> ScriptCall[tuple[int, int]]:
        args = [max_count, self.layout.max_tries]
        return self._call("reap", scheduler_id, args, lambda r: (int(r[0]), int(r[1])), partition)

    def forget(self, scheduler_id: str, items: list[tuple[str, str]], *, partition: int = 0) -> ScriptCall[int]:
        args = [value for task_id, rev in items for value in (task_id, rev)]
        return self._call("forget", scheduler_id, args, int, partition)

    def ack_events(
        self, scheduler_id: str, group: str, entry_ids: list[str], *, partition: int = 0
    ) -> ScriptCall[str]:
        """The snapshotter's: entries committed to Postgres are acked and trimmed."""
        parse = lambda r: r.decode() if isinstance(r, bytes) else r  # noqa: E731
        return self._call("ack", scheduler_id, [group, *entry_ids], parse, partition)

    def index_fair(self, scheduler_id: str, *, partition: int = 0) -> ScriptCall[bool]:
        """One bounded step bringing the fair pop's structures up to date with the queue
        (lua/index_fair.lua); True once they are (or, fairness off, once they are marked stale)."""
        return self._call("index_fair", scheduler_id, [INDEX_FAIR_BATCH], lambda r: bool(r), partition)

    def index_pairs(self, scheduler_id: str, *, partition: int = 0) -> ScriptCall[bool]:
        """One bounded step of building the pair index for tasks of an earlier version
        (lua/index_pairs.lua); True once it is ready."""
        return self._call("index_pairs", scheduler_id, [INDEX_PAIRS_BATCH], lambda r: bool(r), partition)

    def index_orders(self, scheduler_id: str, *, partition: int = 0) -> ScriptCall[bool]:
        """One bounded step of moving the tasks an earlier version queued under text order keys
        to packed ones (lua/index_orders.lua); True once none is left."""
        return self._call("index_orders", scheduler_id, [INDEX_ORDERS_BATCH], lambda r: bool(r), partition)

    def restore(self, record: TaskRecord) -> ScriptCall[bool]:
        """Put a task Postgres holds back live, in its group's partition (a boefje task the
        rules in force put in a limit group, as a push would) or its hash's. Postgres keeps
        no group: the group comes from the rules now, so a leased task counts against its
        group again and a queued one waits its turn (a Katalogus-only group is not known
        here: such a task comes back unlimited)."""
        data, record = record.data, msgspec.structs.replace(record, data=None, lg=None, lc=0, lo=None)
        payload = msgspec.json.decode(data) if record.scheduler_id == "boefje" and data is not None else None
        group = _put_in_group(record, self.rules.current.rules, payload) if isinstance(payload, dict) else None
        args = [
            msgspec.json.encode(record), data, self.layout.dispatch_lease_ms, self.layout.running_lease_ms,
            group.rule.key if group is not None else "", group.rule.spec if group is not None else "",
        ]  # fmt: skip
        keys = self.layout.for_task(self.scheduler(record.scheduler_id).id, record.hash, record.lg)
        return ScriptCall(load("restore"), keys.all, args, lambda r: bool(r))


def _put_in_group(
    record: TaskRecord,
    rules: tuple[limit_rules.LimitRule, ...],
    data: dict[str, Any],
    plugin_rule: limit_rules.LimitRule | None = None,
) -> limit_rules.TaskGroup | None:
    """The boefje task's limit group, written into its record (lg, and lo: its object for
    the cancel on an object's deletion), or None: unlimited."""
    group = limit_rules.group_of(rules, record.organisation, data, plugin_rule)
    if group is not None:
        record.lg = group.name
        input_ooi = data.get("input_ooi")
        record.lo = input_ooi if isinstance(input_ooi, str) and "\0" not in input_ooi else None
    return group


# --- rules ---------------------------------------------------------------------------------


def pops_one_batch(scheduler_id: str) -> bool:
    """The boefje rule: a pop returns one task, or the batch of tasks sharing the
    deduplication key of the best one (with partitions: that partition's share of it)."""
    return scheduler_id == "boefje"


def _identity(
    scheduler: SchedulerType, data: dict[str, Any], payload: Payload, task_id: uuid.UUID | str | None
) -> tuple[str, bytes]:
    """The pushed task's id and the data to store, by mula's rule. A boefje or normalizer task
    is its payload (task id == data.id): given an id equal to data.id, both stay and data is
    stored as sent; otherwise (a push without an id counts as another id: mula's Task id
    defaults to a fresh uuid) both get one fresh uuid and data is stored as mula's model dumps
    it, defaults filled and unknown keys dropped. A report's data is always stored as sent."""
    if keeps_given_id(scheduler.id, data, task_id):
        return str(_uuid(task_id)), limits.encode(data, "data", MALFORMED)
    if not scheduler.carries_id:
        return str(uuid.uuid4()), limits.encode(data, "data", MALFORMED)
    if payload.id is None or "id" in data:  # else the payload's own default: a fresh uuid4 already
        payload.id = uuid.uuid4()
    return str(payload.id), limits.encode(payload, "data", MALFORMED)


def keeps_given_id(scheduler_id: str, data: Any, task_id: uuid.UUID | str | None) -> bool:
    """Whether a push keeps the task id it was given (see _identity): a report always, a boefje
    or normalizer task when the id equals ``data.id``."""
    if task_id is None:
        return False
    if not SCHEDULERS[scheduler_id].carries_id:
        return True
    data_id = data.get("id") if isinstance(data, dict) else None
    try:
        return isinstance(data_id, str) and uuid.UUID(data_id) == _uuid(task_id)
    except ValueError:
        return False


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest("malformed item") from None


def _checked_index_values(values_of: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    try:
        return values_of(*args)
    except indexes.BadIndexValue:
        raise BadRequest("malformed item") from None


_SEARCH_TAILS: BoundedMemo[tuple[filters.Node | None, list[Any] | None]] = BoundedMemo(size=256)


def _search_tail(node: filters.Node | None, scan_budget: int, scan_time_us: int) -> list[Any] | None:
    """``_search``'s arguments after the limit: the filter's Lua form, the scan budget and time,
    the index plan; None when nothing can match. Computed once per filter tree (the API and
    the direct client reuse the tree of a filter they have seen: runners send the same one
    on every pop)."""
    key = (id(node), scan_budget, scan_time_us)
    cached = _SEARCH_TAILS.lookup(key)
    if cached is not None and cached[0] is node:
        return cached[1]
    tail: list[Any] | None
    if node is None:
        tail = ["", scan_budget, scan_time_us, ""]
    elif (plan := indexes.driving_index(node)) is None:
        tail = None
    else:
        index_name, values = plan
        budget = filters.indexed_scan_budget(node, scan_budget, scan_time_us) if index_name else scan_budget
        tail = [filters.to_lua(node), budget, scan_time_us, index_name, *values]
    _SEARCH_TAILS.put(key, (node, tail))
    return tail


def _encoded_changes(changes: dict[str, Any]) -> bytes:
    """patch.lua's changes argument. Runners send the same few ({"status": "running"}, then
    "completed") on every task: those are checked and encoded once."""
    try:
        key = tuple([(name, type(value), value) for name, value in changes.items()])
        encoded = _ENCODED_CHANGES.lookup(key)
    except TypeError:  # an unhashable value (data): not kept
        return limits.encode(_record_changes(changes), "changes")
    if encoded is None:
        encoded = limits.encode(_record_changes(changes), "changes")
        _ENCODED_CHANGES.put(key, encoded)
    return encoded


_ENCODED_CHANGES: BoundedMemo[bytes] = BoundedMemo(size=64)


def _record_changes(changes: dict[str, Any]) -> dict[str, Any]:
    limits.check_columns({name: changes[name] for name in limits.INDEXED_COLUMNS if name in changes})
    fields: dict[str, Any] = {}
    ix: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ("id", "scheduler_id", "modified_at"):
            continue  # identity and bookkeeping are not the caller's to move
        if name == "status":
            value = value.value if hasattr(value, "value") else value
            if value not in STATUSES:
                raise BadRequest(f"invalid status: {value}")
            fields["status"] = value
        elif name == "priority":
            if not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
                raise BadRequest("priority must be a 64-bit integer")
            fields["priority"], fields["pk"] = str(value), priority_key(value)
        elif name == "created_at":
            fields["created_at"] = order_time(datetime_to_us(value))
        elif name == "data":
            fields["data"] = limits.check_data(value).decode()
            ix.update(indexes.values_of_data(value))
        elif name in ("schedule_id",):
            fields[name] = str(value) if value is not None else None
        else:
            fields[name] = value
            if name == "organisation":
                ix["org"] = value
    if ix:
        try:
            fields["ix"] = indexes.checked(ix)
        except indexes.BadIndexValue as exc:
            raise BadRequest(str(exc)) from None
    return fields


# --- replies -------------------------------------------------------------------------------


def _raise_for_code(code: int) -> None:
    if code == ScriptError.CONFLICT:
        raise Conflict("queue is not allowed to push items")
    if code == ScriptError.QUEUE_FULL:
        raise QueueFull()
    if code == ScriptError.ID_EXISTS:
        raise Conflict("a live task already has this id")
    if code == ScriptError.STALE_LEASE:
        raise StaleLease("the lease token is not the task's current one")
    raise RuntimeError(f"unexpected script reply {code}")


def _parse_push(reply: list[Any]) -> TaskRecord | None:
    [own] = reply  # push.lua answers one reply per push
    return _parse_pushed(own)


def _parse_pushed(reply: Any) -> TaskRecord | None:
    if reply == ScriptError.STALE_RULES:
        return None
    if isinstance(reply, int):
        _raise_for_code(reply)
    return decode_record(reply[0], reply[1])


def push_outcomes(reply: list[Any]) -> list[TaskRecord | SchedulerError | None]:
    """A run of pushes' replies (lua/push.lua), one outcome each: the record, the error that
    push alone would raise, or None (the partition follows newer limit rules)."""
    outcomes: list[TaskRecord | SchedulerError | None] = []
    for own in reply:
        if isinstance(own, int):
            try:
                outcomes.append(_parse_pushed(own))
            except SchedulerError as exc:
                outcomes.append(exc)
        else:
            outcomes.append(decode_record(own[0], own[1]))
    return outcomes


def _parse_patch(reply: Any) -> TaskRecord | None:
    if reply == ScriptError.NOT_FOUND:
        return None
    if reply == ScriptError.CONFLICT:
        raise Conflict("a task with the same hash is already queued")
    if isinstance(reply, int):
        _raise_for_code(reply)
    return decode_record(*reply)


def _parse_pop_next(reply: list[Any]) -> tuple[TaskRecord | None, list[TaskRecord]]:
    [own] = reply  # pop_next.lua answers one reply per patch
    if isinstance(own, int):
        return _parse_patch(own), []
    return decode_record(own[0], own[1]), _parse_pop(own[2])


PATCH_ARGS = 5  # patch.lua's ARGV, as pop_next.lua takes it per patch


def _join_pop_next_args(calls_args: list[list[Any]]) -> list[Any]:
    """Merged pop_next calls' arguments (lua/pop_next.lua): how many patches, each one's
    patch.lua ARGV, then one pop.lua ARGV with the pops' lease tokens joined by commas."""
    patches = [arg for args in calls_args for arg in args[1 : 1 + PATCH_ARGS]]
    tokens = ",".join([str(args[1 + PATCH_ARGS]) for args in calls_args])
    return [len(calls_args), *patches, tokens, *calls_args[0][2 + PATCH_ARGS :]]


def _parse_patch_reply(reply: list[Any]) -> TaskRecord | None:
    [own] = reply  # patch.lua answers one reply per patch
    return _parse_patch(own)


def _concatenated(calls_args: list[list[Any]]) -> list[Any]:
    """Merged patches' arguments: each one's patch.lua ARGV, in order."""
    return [arg for args in calls_args for arg in args]


def _one_reply_each(reply: list[Any]) -> list[list[Any]]:
    """A merged run's reply, one answer per call, as each call alone would get it: a list of one."""
    return [[own] for own in reply]


def _parse_requeue(reply: Any) -> TaskRecord | None:
    if reply == ScriptError.NOT_FOUND:
        return None
    if isinstance(reply, int):
        _raise_for_code(reply)
    return decode_record(*reply)


def _parse_extend(reply: int) -> int | None:
    if reply == ScriptError.NOT_FOUND:
        return None
    if reply < 0:
        _raise_for_code(reply)
    return reply


def join_pop_args(calls_args: list[list[Any]]) -> list[Any]:
    """Merged pops' arguments: their lease tokens joined by commas (lua/pop.lua, ARGV[1])."""
    return [",".join([str(args[0]) for args in calls_args]), *calls_args[0][1:]]


def split_pop_replies(reply: list[Any]) -> list[list[Any]]:
    """A merged pop's reply, {n1, rec, data, ..., n2, ...}, cut per request."""
    parts, i = [], 0
    while i < len(reply):
        end = i + 1 + 2 * int(reply[i])
        parts.append(reply[i:end])
        i = end
    return parts


def _parse_pop(reply: list[Any]) -> list[TaskRecord]:
    return _parse_records(reply[1:])


def _parse_records(reply: list[bytes]) -> list[TaskRecord]:
    """{record, data, record, data, ...} as pop and peek return them."""
    return [decode_record(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

