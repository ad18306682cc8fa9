"""The task record: how a live task is stored in Redis and carried on the event streams.

One JSON object per task in ``<p>:{<q>}:tasks`` (field = task id), fields at their default
left out, and ``modified_at`` when it equals ``created_at``, ``rev`` when it equals
``modified_at`` (a queued task's record), ``ix["org"]`` when it equals ``organisation``
(always: indexes.py); ``decode_record`` puts them back. Numbers that may exceed 2^53 or that Lua's cjson would round (priority,
microsecond times) are decimal strings. The task's ``data`` lives beside it, in
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
    def order(self) -> str:
        return f"{self.pk}{self.created_at}{self.id}"

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
_decoder = msgspec.json.Decoder(TaskRecord)
_encoder = msgspec.json.Encoder()


def decode_record(raw: bytes | str, data: bytes | str | None = None) -> TaskRecord:
    record = _decoder.decode(raw)
    if not record.modified_at:
        record.modified_at = record.created_at
    if not record.rev:
        record.rev = record.modified_at
    if "org" not in record.ix:
        record.ix["org"] = record.organisation
    if data is not None:
        record.data = data.decode() if isinstance(data, bytes) else data
    return record


def encode_record(record: TaskRecord) -> bytes:
    return _encoder.encode(record)


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


def order_key(priority: int, created_at_us: int | str, task_id: str) -> str:
    us = order_time_us(created_at_us) if isinstance(created_at_us, str) else created_at_us
    return f"{priority_key(priority)}{order_time(us)}{task_id}"


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
