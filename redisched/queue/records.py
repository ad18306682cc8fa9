"""The task record: how a live task is stored in Redis and carried on the event streams.

One JSON object per task in ``<p>:{<q>}:tasks`` (field = task id) in the short form
(``STORED_NAMES``; lua/includes/common.lua, stored_form): fields at their default left out,
and so is what the key, the queue and the other fields give: ``id`` (the field),
``scheduler_id`` (the queue), ``type`` when it is the scheduler_id, ``pk`` (the priority),
``modified_at`` when it equals ``created_at``, ``rev`` when it equals ``modified_at`` (a
queued task's record), ``ix["org"]`` when it equals ``organisation`` (always: indexes.py).
The event stream and the scripts' replies carry the event form: the short one with ``i``
(the id) and ``q`` (the queue). ``decode_record`` puts everything back, and reads the full
form (``TaskRecord``'s names, every field) earlier versions stored and the callers hand the
scripts; a record that mixes the two forms' names is refused. Numbers that may exceed 2^53
or that Lua's cjson would round (priority, microsecond times) are decimal strings. The task's ``data`` lives beside it, in
``<p>:{<q>}:data``, as the API returns it: Lua never decodes or re-encodes it on the pop path.

Each change appends to ``<p>:{<q>}:events`` an entry ``op <op> rec <record JSON>``, with
``data <data JSON>`` when the data is new or changed and, on a push that links a schedule,
``sched new|linked``. ``rev`` (a decimal string, compare it as a
bigint) grows with every change of any task of the queue and never falls behind the clock in
µs, so applying events out of order or twice is harmless: keep the version with the highest
rev.
"""

from __future__ import annotations

import uuid

import msgspec

from redisched.models import Task, TaskStatus, datetime_to_us, us_to_datetime
from redisched.queue import indexes

PRIORITY_OFFSET = 1 << 63


class TaskRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    scheduler_id: str
    schedule_id: str | None = None
    organisation: str
    priority: str
    status: str
    type: str
    hash: str | None = None
    data: str | None = None  # stored apart; None in events that do not change it
    created_at: str
    modified_at: str = ""  # stored left out when it equals created_at (common.lua, stored_form)
    pk: str  # the priority key, first part of the queue order key (see keys.py)
    ix: dict[str, str] = {}  # index name -> value, for the indexes this task is in
    lease: str | None = None  # token of the current lease
    tries: int = 0  # leases that expired
    lg: str | None = None  # its limit group (REDISCHED_LIMITS), see common.lua
    lc: int = 0  # 1 while it counts against its group (dispatched or running)
    lo: str | None = None  # a limited boefje task's object (input_ooi): its entry in limobj
    rev: str = ""  # stored left out when it equals modified_at

    @property
    def order(self) -> bytes:
        """Its queue order key, as the scripts place it (order_key)."""
        return _packed_order(self.pk, order_time_us(self.created_at), self.id)

    def to_task(self) -> Task:
        return Task(
            id=uuid.UUID(self.id),
            scheduler_id=self.scheduler_id,
            schedule_id=uuid.UUID(self.schedule_id) if self.schedule_id else None,
            organisation=self.organisation,
            priority=int(self.priority),
            status=_STATUSES.get(self.status) or TaskStatus(self.status),
            type=self.type,
            hash=self.hash,
            data=msgspec.Raw(self.data.encode()),
            created_at=us_to_datetime(order_time_us(self.created_at)),
            modified_at=us_to_datetime(int(self.modified_at)),
        )


_STATUSES = {status.value: status for status in TaskStatus}  # a dict lookup, not an Enum call

# The short form's name of each TaskRecord field it holds (lg, lc, lo keep theirs; pk and
# data are never in it).
STORED_NAMES = {
    "id": "i", "scheduler_id": "q", "type": "t", "schedule_id": "sc", "organisation": "o", "priority": "p",
    "status": "s", "hash": "h", "created_at": "c", "modified_at": "m", "rev": "r", "ix": "x", "lease": "l",
    "tries": "n",
}  # fmt: skip
_FULL_ONLY = (*STORED_NAMES, "pk")


class _ShortRecord(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    rename={**STORED_NAMES, **{f"full_{name}": name for name in _FULL_ONLY}},
):
    """The short form. ``full_*``: the full form's names, which it never holds (null or absent)."""

    id: str = ""  # the event form's; the stored form's is its field in K_TASKS
    scheduler_id: str = ""  # likewise: the queue's id
    schedule_id: str | None = None
    organisation: str
    priority: str
    status: str
    type: str = ""  # "": the scheduler_id
    hash: str | None = None
    data: str | None = None  # as in TaskRecord: the scripts' events carry it apart
    created_at: str
    modified_at: str = ""
    ix: dict[str, str] = {}
    lease: str | None = None
    tries: int = 0
    lg: str | None = None
    lc: int = 0
    lo: str | None = None
    rev: str = ""
    full_id: None = None
    full_scheduler_id: None = None
    full_type: None = None
    full_schedule_id: None = None
    full_organisation: None = None
    full_priority: None = None
    full_status: None = None
    full_hash: None = None
    full_created_at: None = None
    full_modified_at: None = None
    full_rev: None = None
    full_ix: None = None
    full_lease: None = None
    full_tries: None = None
    full_pk: None = None


class _ShortNames(msgspec.Struct, rename={f"short_{name}": name for name in STORED_NAMES.values()}):
    """What a record in the full form may not hold: the short form's names (null or absent)."""

    short_i: None = None
    short_q: None = None
    short_t: None = None
    short_sc: None = None
    short_o: None = None
    short_p: None = None
    short_s: None = None
    short_h: None = None
    short_c: None = None
    short_m: None = None
    short_r: None = None
    short_x: None = None
    short_l: None = None
    short_n: None = None


_short_decoder = msgspec.json.Decoder(_ShortRecord)
_full_decoder = msgspec.json.Decoder(TaskRecord)
_short_names_decoder = msgspec.json.Decoder(_ShortNames)
_encoder = msgspec.json.Encoder()
_PRIORITY_KEYS = 1 << 64


def decode_record(
    raw: bytes | str, data: bytes | str | None = None, *, task_id: str = "", queue_id: str = ""
) -> TaskRecord:
    """A record in either form, every field put back. ``task_id`` and ``queue_id``: where a
    record from K_TASKS was read (the event form names both itself). Raises
    msgspec.ValidationError (a DecodeError) for one that is not a record."""
    try:
        short = _short_decoder.decode(raw)
    except msgspec.ValidationError:
        if b'"id"' not in (raw.encode() if isinstance(raw, str) else raw):
            raise
        _short_names_decoder.decode(raw)  # the full form: it holds none of the short form's names
        record = _full_decoder.decode(raw)
        if record.pk != _priority_key_of(record.priority)[1]:  # the scripts move it aside
            raise msgspec.ValidationError(f"the record's pk is not its priority's key: {record.pk!r}")
        if not record.modified_at:
            record.modified_at = record.created_at
        if not record.rev:
            record.rev = record.modified_at
        if "org" not in record.ix:
            record.ix["org"] = record.organisation
    else:
        record = _full_record(short, task_id, queue_id)
    if data is not None:
        record.data = data.decode() if isinstance(data, bytes) else data
    return record


def _full_record(short: _ShortRecord, task_id: str, queue_id: str) -> TaskRecord:
    if (task_id and short.id and short.id != task_id) or (queue_id and short.scheduler_id and short.scheduler_id != queue_id):
        raise msgspec.ValidationError("the record names another id or queue than where it is stored")
    task_id, scheduler_id, priority = short.id or task_id, short.scheduler_id or queue_id, short.priority
    priority, pk = _priority_key_of(priority)
    if not task_id or not scheduler_id:
        raise msgspec.ValidationError("the record names no id or no queue")
    ix = short.ix
    if "org" not in ix:
        ix["org"] = short.organisation
    modified_at = short.modified_at or short.created_at
    record = TaskRecord(
        id=task_id,
        scheduler_id=scheduler_id,
        organisation=short.organisation,
        priority=priority,
        status=short.status,
        type=short.type or scheduler_id,
        created_at=short.created_at,
        modified_at=modified_at,
        pk=pk,
        ix=ix,
        rev=short.rev or modified_at,
    )
    # the rest mostly at their defaults: set when not (fewer arguments, a cheaper decode)
    if short.hash is not None:
        record.hash = short.hash
    if short.schedule_id is not None:
        record.schedule_id = short.schedule_id
    if short.lease is not None:
        record.lease = short.lease
    if short.tries:
        record.tries = short.tries
    if short.lg is not None:
        record.lg, record.lc, record.lo = short.lg, short.lc, short.lo
    if short.data is not None:
        record.data = short.data
    return record


def _priority_key_of(priority: str) -> tuple[str, str]:
    """A stored priority (past 19 digits without its leading zeros) and the key the scripts
    derive from it: "" past int64 (a script moves such a record aside; Postgres refuses its
    row); leading zeros do not count, as in common.lua."""
    digits = priority[1:] if priority[:1] == "-" else priority
    if not (digits.isascii() and digits.isdigit()):
        raise msgspec.ValidationError(f"the record's priority is not a number: {priority!r}")
    if len(digits) > 19:  # int() refuses past 4,300 digits, leading zeros too
        digits = digits.lstrip("0") or "0"
        priority = f"-{digits}" if priority[:1] == "-" else digits
    shifted = int(priority) + PRIORITY_OFFSET if len(digits) <= 19 else -1
    return priority, f"{shifted:020d}" if 0 <= shifted < _PRIORITY_KEYS else ""


def encode_record(record: TaskRecord) -> bytes:
    """The record in the event form, as the scripts write it to the event stream."""
    ix = record.ix if record.ix.get("org") != record.organisation else {k: v for k, v in record.ix.items() if k != "org"}
    modified_at = record.modified_at if record.modified_at != record.created_at else ""
    short = _ShortRecord(
        id=record.id,
        scheduler_id=record.scheduler_id,
        schedule_id=record.schedule_id,
        organisation=record.organisation,
        priority=record.priority,
        status=record.status,
        type=record.type if record.type != record.scheduler_id else "",
        hash=record.hash,
        data=record.data,
        created_at=record.created_at,
        modified_at=modified_at,
        ix=ix,
        lease=record.lease,
        tries=record.tries,
        lg=record.lg,
        lc=record.lc,
        lo=record.lo,
        rev=record.rev if record.rev != (record.modified_at or record.created_at) else "",
    )
    return _encoder.encode(short)


def priority_key(priority: int) -> str:
    """Fixed-width, byte-sortable form of a signed 64-bit priority."""
    return f"{priority + PRIORITY_OFFSET:020d}"


_ORDER_TIME_MAX = 10**16  # 16 digits of µs reach 2286-11-20
_ORDER_TIME_SHIFT = 10**17  # years 1 to 1969: -62,135,596,800,000,000 ≤ µs < 0


def order_time(us: int) -> str:
    """``created_at`` as the queue order key holds it: byte order is time order for every
    datetime of years 1 to 9999. 16 digits for 1970 to 2286 (the form of earlier versions),
    "-" and 17 digits of µs + 10^17 before, ":" and 18 digits after ('-' < '0'-'9' < ':')."""
    if 0 <= us < _ORDER_TIME_MAX:
        return f"{us:016d}"
    if us < 0:
        return f"-{us + _ORDER_TIME_SHIFT:017d}"
    return f":{us:018d}"


def order_time_us(text: str) -> int:
    if text.startswith("-"):
        return int(text[1:]) - _ORDER_TIME_SHIFT
    if text.startswith(":"):
        return int(text[1:])
    return int(text)


# The queue order key (keys.py; lua/includes/common.lua, order_of): the priority key (20
# digits) and created_at + 10^17 (18 digits of µs: years 1 to 9999 sort) as base-100 digits,
# a byte per two decimal ones, then the id's 16 bytes: 35 B. Its first byte is below "0",
# where an earlier version's text form (priority key, order_time, id) starts.
_ORDER_TIME_OFFSET = 10**17


def _base100(digits: str) -> bytes:
    return bytes(int(digits[i : i + 2]) for i in range(0, len(digits), 2))


def order_key_prefix(priority: int) -> bytes:
    """The start of the order keys of tasks of this priority."""
    return _base100(priority_key(priority))


def order_key(priority: int, created_at_us: int | str, task_id: str) -> bytes:
    us = order_time_us(created_at_us) if isinstance(created_at_us, str) else created_at_us
    return _packed_order(priority_key(priority), us, task_id)


def _packed_order(pk: str, created_at_us: int, task_id: str) -> bytes:
    time = f"{created_at_us + _ORDER_TIME_OFFSET:018d}"
    return _base100(pk) + _base100(time) + bytes.fromhex(task_id.replace("-", ""))


def record_from_task(task: Task, *, tries: int = 0, rev: str = "0") -> TaskRecord:
    """The Redis record of a task Postgres has: for putting a task back live (a finished task
    patched to queued, reconciliation after Redis lost data)."""
    created_us = datetime_to_us(task.created_at)
    data = bytes(task.data).decode()
    return TaskRecord(
        id=str(task.id),
        scheduler_id=task.scheduler_id,
        schedule_id=str(task.schedule_id) if task.schedule_id else None,
        organisation=task.organisation,
        priority=str(task.priority),
        status=task.status.value,
        type=task.type,
        hash=task.hash,
        data=data,
        created_at=order_time(created_us),
        modified_at=f"{datetime_to_us(task.modified_at):016d}",
        pk=priority_key(task.priority),
        ix=indexes.values_of_task(task.organisation, msgspec.json.decode(data)),
        tries=tries,
        rev=rev,
    )
