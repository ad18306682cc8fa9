"""The shapes of the contract (``openkat/API.md``) as msgspec Structs.

Payload structs (BoefjeTask, NormalizerTask, ReportTask) validate ``data`` as mula's pydantic
models do and, where mula stores a payload normalised, normalise it: unknown keys dropped,
defaults filled. Field order is the order mula serialises them in.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import mmh3
import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field


class TaskStatus(str, enum.Enum):
    PENDING = "pending"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = [s.value for s in TaskStatus]
FINISHED = frozenset({"completed", "failed", "cancelled"})
LEASED = frozenset({"dispatched", "running"})


class PoppedStatus(str, enum.Enum):
    """What a pop hands its tasks out as (``?status=``): dispatched, as mula does (the runner
    patches "running" when it starts), or running, for a worker that starts each at once."""

    DISPATCHED = "dispatched"
    RUNNING = "running"


def mmh3_hex(text: str) -> str:
    """mula's dedup hash: MurmurHash3 x64 128-bit, seed 0, as 32 lowercase hex chars."""
    return mmh3.hash_bytes(text.encode()).hex()


# --- payloads ------------------------------------------------------------------------------


class Boefje(Struct, kw_only=True):
    id: str
    name: str | None = None
    version: str | None = None
    oci_image: str | None = None


class BoefjeTask(Struct, kw_only=True):
    id: uuid.UUID | None = field(default_factory=uuid.uuid4)
    boefje: Boefje
    input_ooi: str | None = None
    organization: str
    deduplication_key: uuid.UUID | None = None
    dispatches: list[Any] = field(default_factory=list)

    def hash(self) -> str:
        if self.input_ooi:
            return mmh3_hex(f"{self.input_ooi}-{self.boefje.id}-{self.organization}")
        return mmh3_hex(f"{self.boefje.id}-{self.organization}")


class Normalizer(Struct, kw_only=True):
    id: str
    name: str | None = None
    version: str | None = None


class BoefjeMeta(Struct, kw_only=True):
    id: uuid.UUID
    boefje: Boefje
    input_ooi: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    organization: str
    started_at: datetime | None = None
    ended_at: datetime | None = None


class MimeType(Struct, kw_only=True):
    value: str


class RawData(Struct, kw_only=True):
    id: uuid.UUID
    boefje_meta: BoefjeMeta
    mime_types: list[MimeType] = field(default_factory=list)
    secure_hash: str | None = None
    hash_retrieval_link: str | None = None


class NormalizerTask(Struct, kw_only=True):
    id: uuid.UUID | None = field(default_factory=uuid.uuid4)
    normalizer: Normalizer
    raw_data: RawData

    def hash(self) -> str:
        meta = self.raw_data.boefje_meta
        return mmh3_hex(f"{self.normalizer.id}-{meta.id}-{meta.organization}")


class ReportTask(Struct, kw_only=True):
    organisation_id: str
    report_recipe_id: str

    def hash(self) -> str:
        return mmh3_hex(f"{self.report_recipe_id}-{self.organisation_id}")


Payload = BoefjeTask | NormalizerTask | ReportTask


class SchedulerType(Struct, frozen=True):
    """A scheduler as the API lists it; its queue has the same id."""

    id: str
    payload: type
    item_type: str
    has_schedules: bool
    carries_id: bool  # data.id is the task id (boefje, normalizer)


SCHEDULERS: dict[str, SchedulerType] = {
    "boefje": SchedulerType("boefje", BoefjeTask, "BoefjeTask", True, True),
    "normalizer": SchedulerType("normalizer", NormalizerTask, "NormalizerTask", False, True),
    "report": SchedulerType("report", ReportTask, "ReportTask", True, False),
}


class MalformedPayload(ValueError):
    """``data`` does not validate as the scheduler's payload type."""


def parse_payload(scheduler_id: str, data: Any) -> Payload:
    try:
        return msgspec.convert(data, SCHEDULERS[scheduler_id].payload, strict=False)
    except msgspec.ValidationError as exc:
        raise MalformedPayload(str(exc)) from exc


# Fields mula's payload models declare without a default although they may be null (pydantic
# then requires the key): the structs above give them defaults because the AMQP events and
# Bytes' answers share them, so a pushed payload is checked for them apart.
REQUIRED_NULLABLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "normalizer": (
        ("raw_data", "mime_types"),
        ("raw_data", "boefje_meta", "input_ooi"),
        ("raw_data", "boefje_meta", "started_at"),
        ("raw_data", "boefje_meta", "ended_at"),
    ),
}


def check_pushed_payload(scheduler_id: str, data: dict[str, Any]) -> Payload:
    """A pushed ``data`` as mula's model validates it; raises MalformedPayload."""
    payload = parse_payload(scheduler_id, data)
    for path in REQUIRED_NULLABLE.get(scheduler_id, ()):
        holder = data
        for key in path[:-1]:
            holder = holder[key]  # present: the struct validated it
        if path[-1] not in holder:
            raise MalformedPayload(f"Object missing required field `{path[-1]}` - at `$.{'.'.join(path[:-1])}`")
    return payload


def payload_hash(scheduler_id: str, data: Any) -> str:
    """The dedup hash of a task's (or schedule's) ``data``; raises MalformedPayload."""
    return parse_payload(scheduler_id, data).hash()


# --- time ----------------------------------------------------------------------------------


def us_to_datetime(us: int) -> datetime:
    # Integer arithmetic, not us / 1e6: a float's rounding could carry into the next second (and
    # past year 9999 from 9999-12-31T23:59:59.999999). The epoch plus a timedelta is exact and
    # costs a tenth of fromtimestamp (twice per popped task); out of range, the old formula
    # raises what it always raised.
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def datetime_to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Where payloads hold datetimes: mula's BoefjeMeta (inside a normalizer task's raw_data), and
# the top of ``data``, where the runner's Job model reads started_at and ended_at.
DATETIME_PATHS = (
    ("started_at",),
    ("ended_at",),
    ("raw_data", "boefje_meta", "started_at"),
    ("raw_data", "boefje_meta", "ended_at"),
)


def with_aware_datetimes(data: Any) -> Any:
    """``data`` with every naive datetime at DATETIME_PATHS taken as UTC and written with its
    offset; anything else as it was. The runners parse these as pydantic ``AwareDatetime``: one
    naive value would make every pop that includes its task unparseable. Copies what it changes."""
    if not isinstance(data, dict):
        return data
    for path in DATETIME_PATHS:
        data = _aware_at(data, path)
    return data


def _aware_at(holder: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    value = holder.get(path[0])
    if len(path) > 1:
        changed = _aware_at(value, path[1:]) if isinstance(value, dict) else value
    else:
        changed = _aware_text(value) if isinstance(value, str) else value
    return holder if changed is value else {**holder, path[0]: changed}


def _aware_text(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text  # not a datetime: the payload's validation says what it thinks
    return text if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc).isoformat()


# --- API shapes ----------------------------------------------------------------------------


class Task(Struct, kw_only=True):
    """A task as the API returns it. ``data`` is kept as raw JSON: it is never re-parsed on the
    pop path, only copied from Redis into the response."""

    id: uuid.UUID
    scheduler_id: str
    schedule_id: uuid.UUID | None = None
    organisation: str
    priority: int
    status: TaskStatus
    type: str
    hash: str | None = None
    data: Raw
    created_at: datetime
    modified_at: datetime


class TaskPush(Struct, kw_only=True, forbid_unknown_fields=True):
    organisation: str
    data: dict[str, Any]
    id: uuid.UUID | None = None
    scheduler_id: str | None = None
    priority: int | None = None


class TaskPatch(Struct, kw_only=True):
    """Any Task field; UNSET = not given. Unknown keys are ignored (mula does)."""

    id: uuid.UUID | UnsetType = UNSET
    scheduler_id: str | UnsetType = UNSET
    schedule_id: uuid.UUID | None | UnsetType = UNSET
    organisation: str | UnsetType = UNSET
    priority: int | UnsetType = UNSET
    status: TaskStatus | UnsetType = UNSET
    type: str | UnsetType = UNSET
    hash: str | None | UnsetType = UNSET
    data: dict[str, Any] | UnsetType = UNSET
    created_at: datetime | UnsetType = UNSET
    modified_at: datetime | UnsetType = UNSET

    def given(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET}


class Scheduler(Struct, kw_only=True):
    id: str
    type: str
    item_type: str
    qsize: int
    last_activity: datetime | None


class Schedule(Struct, kw_only=True):
    id: uuid.UUID
    scheduler_id: str
    organisation: str
    hash: str
    data: dict[str, Any]
    enabled: bool = True
    schedule: str | None = None
    deadline_at: datetime | None = None
    created_at: datetime
    modified_at: datetime


class ScheduleCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    scheduler_id: str
    organisation: str
    data: dict[str, Any]
    schedule: str | None = None
    deadline_at: datetime | None = None


class SchedulePatch(Struct, kw_only=True):
    hash: str | UnsetType = UNSET
    data: dict[str, Any] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    schedule: str | None | UnsetType = UNSET
    deadline_at: datetime | None | UnsetType = UNSET

    def given(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET}


class ServiceHealth(Struct, kw_only=True):
    service: str = "scheduler"
    healthy: bool = True
    version: str = ""
    additional: Any = None
    results: list[Any] = field(default_factory=list)
    externals: dict[str, bool] = field(default_factory=dict)
