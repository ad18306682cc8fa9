"""Every queue operation as a pure step: build the script call, then read its reply.

``QueueCommands`` holds no connection. The asyncio queue (queue.py) and the sync direct
client (client.py) both run these calls, so the rules live here once: validation, the push
id and hash rules, the pop limit rules, index planning, error codes.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from redisched import filters, limits
from redisched.errors import BadRequest, Conflict, NotFound, QueueFull, StaleLease
from redisched.models import SCHEDULERS, STATUSES, MalformedPayload, Payload, SchedulerType, check_pushed_payload, datetime_to_us
from redisched.models import with_aware_datetimes
from redisched.queue.keys import INDEXES, QueueKeys, QueueLayout
from redisched.queue.records import TaskRecord, decode_record, priority_key
from redisched.queue.scripts import Script, load

T = TypeVar("T")

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UNLINK_BATCH = 500  # task ids per unlink script call
MAX_LEASE_SECONDS = 365 * 86400  # a lease must end at a date Python, Lua and Postgres can hold
DRIVING_INDEX_PREFERENCE = ("boefje", "image", "org")  # most selective first
_INDEX_BY_PATH = {path: name for name, path in INDEXES.items()}

MALFORMED = "malformed item: "  # the contract's push refusal, then what is wrong
E_CONFLICT, E_QUEUE_FULL, E_ID_EXISTS, E_NOT_FOUND, E_STALE_LEASE = -1, -2, -3, -4, -5


@dataclass(frozen=True)
class ScriptCall(Generic[T]):
    """One script run. ``script`` None: the answer is known without Redis (parse(None)).
    Calls with the same ``merge_key`` may run as one script run: their first argument (the
    lease token) joined by commas; ``split`` cuts the reply back into one reply per call."""

    script: Script | None
    keys: list[str]
    args: list[Any]
    parse: Callable[[Any], T]
    merge_key: tuple[Any, ...] | None = None
    split: Callable[[list[Any]], list[list[Any]]] | None = None


@dataclass
class QueueOptions:
    """Per-queue behaviour (mula's PriorityQueue options)."""

    maxsize: int = 0
    allow_replace: bool = False
    allow_updates: bool = False
    allow_priority_updates: bool = False

    @property
    def twin_policy(self) -> str:
        if self.allow_replace:
            return "replace"
        return ",".join(p for p, on in (("updates", self.allow_updates), ("priority", self.allow_priority_updates)) if on)


@dataclass
class QueueCommands:
    prefix: str = "rs"
    dispatch_lease_ms: int = 300_000
    running_lease_ms: int = 86_400_000
    max_tries: int = 3
    scan_budget: int = 2000
    scan_time_us: int = 1500
    pop_max: int = 1000
    options: dict[str, QueueOptions] = field(default_factory=dict)
    partitions: int = 1

    def __post_init__(self) -> None:
        self.layout = QueueLayout(self.prefix, self.partitions, tuple(SCHEDULERS))

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
    ) -> ScriptCall[TaskRecord]:
        """``link_schedule`` False: the task gets no schedule even on a queue that has them
        (boefjes that run only on object events, ``run_on``). ``refuse_live_twin``: a twin
        that is dispatched or running refuses the push too (the schedulers' rule; the API's
        contract lets only a queued twin refuse)."""
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
            ix=_index_values(organisation, payload),
        )
        options = self.options.get(scheduler_id, QueueOptions())
        args = [
            limits.encode(record, "organisation", MALFORMED),
            stored_data,
            -(-options.maxsize // self.partitions),  # each partition holds its share
            options.twin_policy,
            "1" if scheduler.has_schedules and link_schedule else "0",
            str(uuid.uuid4()),
            "1" if refuse_live_twin else "0",
        ]
        keys = self.layout.for_hash(scheduler_id, record.hash)
        return ScriptCall(load("push"), keys.all, args, _parse_push)

    # --- pop and peek ------------------------------------------------------------------------

    def pop(
        self,
        scheduler_id: str,
        *,
        filters_node: filters.Node | None = None,
        limit: int | None = None,
        token: str | None = None,
        partition: int = 0,
    ) -> ScriptCall[list[TaskRecord]]:
        self.scheduler(scheduler_id)
        search = self._search(filters_node, limit)
        if search is None:
            return _NOTHING
        dedup_batches = "1" if _pops_one_batch(scheduler_id) else "0"
        args = [token or secrets.token_hex(8), dedup_batches, self.dispatch_lease_ms, *search]
        keys = self.keys(scheduler_id, partition).all
        merge_key = (keys[0], *args[1:])
        return ScriptCall(load("pop"), keys, args, _parse_pop, merge_key, split_pop_replies)

    def peek(
        self, scheduler_id: str, *, filters_node: filters.Node | None = None, limit: int = 10, partition: int = 0
    ) -> ScriptCall[list[TaskRecord]]:
        self.scheduler(scheduler_id)
        search = self._search(filters_node, limit)
        return _NOTHING if search is None else self._call("peek", scheduler_id, search, _parse_records, partition)

    def pop_steps(
        self,
        scheduler_id: str,
        *,
        filters_node: filters.Node | None = None,
        limit: int | None = None,
        token: str | None = None,
        start: int = 0,
    ) -> Generator[ScriptCall[list[TaskRecord]], list[TaskRecord], list[TaskRecord]]:
        """A pop over every partition, as the calls to run in turn (each is sent its result):
        from partition ``start`` on, each asked only for what is still missing."""
        wanted, popped = self.limit_of(limit), []
        for step in range(self.partitions):
            if len(popped) >= wanted or (popped and _pops_one_batch(scheduler_id)):
                break
            partition = (start + step) % self.partitions
            remaining = wanted - len(popped)
            popped += yield self.pop(
                scheduler_id, filters_node=filters_node, limit=remaining, token=token, partition=partition
            )
        return popped

    def _search(self, filters_node: filters.Node | None, limit: int | None) -> list[Any] | None:
        """The ARGV tail both pop and peek read (lua/includes/candidates.lua, search_args);
        None when nothing can match, so no round trip is needed."""
        limit = self.limit_of(limit)
        plan = _compiled(filters_node)
        if limit == 0 or plan is None:
            return None
        lua_filter, index_name, values = plan
        return [limit, lua_filter, self.scan_budget, self.scan_time_us, index_name, *values]

    def limit_of(self, limit: int | None) -> int:
        if limit is None:
            return self.pop_max
        if limit < 0:
            raise BadRequest("limit must not be negative")
        return min(limit, self.pop_max)

    # --- patch, leases -----------------------------------------------------------------------

    def patch(
        self, scheduler_id: str, task_id: str, changes: dict[str, Any], *, token: str | None = None, partition: int = 0
    ) -> ScriptCall[TaskRecord | None]:
        """``changes`` are Task fields (API names and types). Returns None when the task is
        not live in this queue (the caller looks in the history)."""
        args = [
            str(task_id),
            token or "",
            limits.encode(_record_changes(changes), "changes"),
            self.dispatch_lease_ms,
            self.running_lease_ms,
        ]
        return self._call("patch", scheduler_id, args, _parse_patch, partition)

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
    ) -> ScriptCall[int]:
        if not 0 < seconds <= MAX_LEASE_SECONDS:  # also refuses nan
            raise BadRequest(f"lease length must be positive and at most {MAX_LEASE_SECONDS} seconds")
        args = [str(task_id), token, int(seconds * 1000)]
        return self._call("extend", scheduler_id, args, _parse_extend, partition)

    def reap(self, scheduler_id: str, *, max_count: int = 1000, partition: int = 0) -> ScriptCall[tuple[int, int]]:
        args = [max_count, self.max_tries]
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

    def restore(self, record: TaskRecord) -> ScriptCall[bool]:
        """Put a task Postgres holds back live, in the partition of its hash."""
        data, record = record.data, msgspec.structs.replace(record, data=None)
        args = [msgspec.json.encode(record), data, self.dispatch_lease_ms, self.running_lease_ms]
        keys = self.layout.for_hash(self.scheduler(record.scheduler_id).id, record.hash)
        return ScriptCall(load("restore"), keys.all, args, lambda r: bool(r))


# --- rules ---------------------------------------------------------------------------------


def _pops_one_batch(scheduler_id: str) -> bool:
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


def _index_values(organisation: str, payload: Any) -> dict[str, str]:
    values = {"org": organisation}
    boefje = getattr(payload, "boefje", None)
    if boefje is not None:
        values["boefje"] = boefje.id
        if boefje.oci_image is not None:
            values["image"] = boefje.oci_image
    dedup_key = getattr(payload, "deduplication_key", None)
    if dedup_key is not None:
        values["dedup"] = str(dedup_key)
    if any("\0" in value for value in values.values()):
        raise BadRequest("malformed item")
    return values


_COMPILED: dict[int, tuple[filters.Node, tuple[bytes | str, str, list[str]] | None]] = {}


def _compiled(node: filters.Node | None) -> tuple[bytes | str, str, list[str]] | None:
    """The filter's Lua form and index plan, computed once per filter tree (the API reuses
    the tree of a body it has seen: runners send the same one on every pop)."""
    if node is None:
        return "", "", []
    cached = _COMPILED.get(id(node))
    if cached is not None and cached[0] is node:
        return cached[1]
    plan = _plan(node)
    compiled = (filters.to_lua(node), *plan) if plan is not None else None
    if len(_COMPILED) >= 256:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[id(node)] = (node, compiled)
    return compiled


def _plan(node: filters.Node | None) -> tuple[str, list[str]] | None:
    """Which index drives the search, and for which values: the most selective index the
    filter constrains (a boefje id names its image, not the other way round: driving from
    the image would pass over every task of the image's other boefjes on each pop). None:
    nothing can match."""
    if node is None:
        return "", []
    terms: dict[str, set[str]] = {}
    for column, path, _op, values in filters.index_terms(node):
        name = _INDEX_BY_PATH.get((column, path))
        if name is not None and name != "dedup":
            terms[name] = terms[name] & set(values) if name in terms else set(values)
    for name in DRIVING_INDEX_PREFERENCE:
        if name in terms:
            return (name, sorted(terms[name])) if terms[name] else None
    return "", []


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
            fields["created_at"] = f"{datetime_to_us(value):016d}"
        elif name == "data":
            fields["data"] = limits.check_data(value).decode()
            ix.update(_data_index_values(value))
        elif name in ("schedule_id",):
            fields[name] = str(value) if value is not None else None
        else:
            fields[name] = value
            if name == "organisation":
                ix["org"] = value
    if ix:
        if any(isinstance(v, str) and "\0" in v for v in ix.values()):
            raise BadRequest("index values must not contain NUL")
        fields["ix"] = ix
    return fields


def index_values_of(organisation: str, data: dict[str, Any]) -> dict[str, str]:
    """The index values of a task, from its organisation and (any shape of) data."""
    values = {"org": organisation, **_data_index_values(data)}
    return {name: value for name, value in values.items() if value is not None}


def _data_index_values(data: dict[str, Any]) -> dict[str, str | None]:
    boefje = data.get("boefje") if isinstance(data.get("boefje"), dict) else {}
    dedup = data.get("deduplication_key")
    return {
        "boefje": boefje.get("id") if isinstance(boefje.get("id"), str) else None,
        "image": boefje.get("oci_image") if isinstance(boefje.get("oci_image"), str) else None,
        "dedup": str(dedup) if dedup is not None else None,
    }


# --- replies -------------------------------------------------------------------------------


def _raise_for_code(code: int) -> None:
    if code == E_CONFLICT:
        raise Conflict("queue is not allowed to push items")
    if code == E_QUEUE_FULL:
        raise QueueFull()
    if code == E_ID_EXISTS:
        raise Conflict("a live task already has this id")
    if code == E_STALE_LEASE:
        raise StaleLease("the lease token is not the task's current one")
    raise RuntimeError(f"unexpected script reply {code}")


def _parse_push(reply: Any) -> TaskRecord:
    if isinstance(reply, int):
        _raise_for_code(reply)
    return decode_record(*reply)


def _parse_patch(reply: Any) -> TaskRecord | None:
    if reply == E_NOT_FOUND:
        return None
    if reply == E_CONFLICT:
        raise Conflict("a task with the same hash is already queued")
    if isinstance(reply, int):
        _raise_for_code(reply)
    return decode_record(*reply)


def _parse_requeue(reply: Any) -> TaskRecord | None:
    if reply == E_NOT_FOUND:
        return None
    if isinstance(reply, int):
        _raise_for_code(reply)
    return decode_record(*reply)


def _parse_extend(reply: int) -> int:
    if reply == E_NOT_FOUND:
        raise NotFound("task not leased")
    if reply < 0:
        _raise_for_code(reply)
    return reply


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


_NOTHING: ScriptCall[list[TaskRecord]] = ScriptCall(None, [], [], lambda _reply: [])
