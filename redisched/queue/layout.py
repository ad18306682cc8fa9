"""The queue layout: where each queue's keys are (prefix, partitions) and how its tasks are
leased, built once from Settings (``QueueLayout.from_settings``) and handed to everything that
names a queue key or runs a queue operation. Defaults come from config.py only."""

from __future__ import annotations

from dataclasses import dataclass, field

from redisched import config
from redisched.limit_rules import LimitRule, parse_rules
from redisched.models import SCHEDULERS
from redisched.queue.keys import QueueKeys, layout_key, limit_rules_key, partition_keys, partition_of

QUEUE_IDS = tuple(SCHEDULERS)  # one queue per scheduler, same id


@dataclass(frozen=True)
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


@dataclass(frozen=True, eq=False)
class QueueLayout:
    """``partitions`` per queue under ``prefix``; leases of ``dispatch_lease_ms`` after a pop and
    ``running_lease_ms`` once running; a task fails after ``max_tries`` expired leases; a pop
    examines at most ``scan_budget`` candidates, for at most ``scan_time_us``, for a filter
    no index serves; ``one_task_per_schedule``: a schedule's live task refuses its pushes;
    ``fairness``: "organisation" for the fair pop across organisations."""

    prefix: str = config.KEY_PREFIX
    partitions: int = config.PARTITIONS
    dispatch_lease_ms: int = config.DISPATCH_TIMEOUT_SECONDS * 1000
    running_lease_ms: int = config.GRACE_PERIOD_SECONDS * 1000
    max_tries: int = config.MAX_TRIES
    scan_budget: int = config.SCAN_BUDGET
    scan_time_us: int = config.SCAN_TIME_US
    one_task_per_schedule: bool = config.ONE_TASK_PER_SCHEDULE
    fairness: str = config.FAIRNESS
    limits: tuple[LimitRule, ...] = ()
    options: dict[str, QueueOptions] = field(default_factory=dict)
    queue_ids: tuple[str, ...] = QUEUE_IDS

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("a queue needs at least one partition")
        if self.fairness not in ("none", "organisation"):
            raise ValueError("fairness is 'none' or 'organisation'")

    @classmethod
    def from_settings(cls, settings: config.Settings) -> QueueLayout:
        return cls(
            prefix=settings.key_prefix,
            partitions=settings.partitions,
            dispatch_lease_ms=settings.dispatch_timeout * 1000,
            running_lease_ms=settings.lease_running_seconds * 1000,
            max_tries=settings.max_tries,
            scan_budget=settings.scan_budget,
            scan_time_us=settings.scan_time_us,
            one_task_per_schedule=settings.one_task_per_schedule,
            fairness=settings.fairness,
            limits=parse_rules(settings.limits),
            options={queue_id: QueueOptions(maxsize=settings.pq_maxsize) for queue_id in QUEUE_IDS},
        )

    def options_of(self, queue_id: str) -> QueueOptions:
        return self.options.get(queue_id) or QueueOptions()

    def of(self, queue_id: str) -> list[QueueKeys]:
        """The keys of each partition of the queue, partition 0 first."""
        return partition_keys(self.prefix, queue_id, self.partitions, self.fair)

    @property
    def fair(self) -> bool:
        """REDISCHED_FAIRNESS=organisation: the scripts keep and use the fair structures."""
        return self.fairness == "organisation"

    def for_hash(self, queue_id: str, task_hash: str | None) -> QueueKeys:
        return self.of(queue_id)[partition_of(task_hash, self.partitions)]

    def for_task(self, queue_id: str, task_hash: str | None, group: str | None) -> QueueKeys:
        """Where a task goes: a task of a limit group to its group's partition (one partition
        holds the group's state), any other to its hash's. Twins share the hash, hence the
        group under the same rules, hence the partition."""
        if group is None:
            return self.for_hash(queue_id, task_hash)
        return self.of(queue_id)[partition_of(group, self.partitions)]

    @property
    def layout_key(self) -> str:
        return layout_key(self.prefix)

    @property
    def limit_rules_key(self) -> str:
        return limit_rules_key(self.prefix)

    def every(self, queue_ids: tuple[str, ...] | list[str] | None = None) -> list[QueueKeys]:
        """Every partition of the given queues (all of them by default), queue by queue."""
        return [keys for queue_id in (queue_ids or self.queue_ids) for keys in self.of(queue_id)]
