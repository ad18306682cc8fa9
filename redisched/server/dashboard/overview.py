"""The dashboard's figures, as one JSON document: what Redis holds now (one round trip,
queue/stats.py) beside the counts Postgres keeps by trigger (two small reads of the counter
table, never of the tasks). Postgres down or slow: the Redis half still answers."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import msgspec

from redisched.models import SCHEDULERS, STATUSES, us_to_datetime
from redisched.queue.keys import RATE_BUCKET_SECONDS
from redisched.queue.stats import QueueStats, RedisSnapshot, read_snapshot
from redisched.services import Services

log = logging.getLogger(__name__)

RATE_BUCKETS = 30  # 5 minutes of 10-second buckets on the chart
HISTORY_TIMEOUT_SECONDS = 2.0
SERVED_STATUSES = ("dispatched", "running", "completed", "failed")


class Lease(msgspec.Struct):
    task_id: str
    status: str
    held_seconds: float  # since its last status change (the pop, or running)
    expires_in_seconds: float  # negative: past its timeout, waiting for the reaper


class SchedulerFigures(msgspec.Struct):
    id: str
    depth: int
    leased: int  # dispatched + running, live in Redis
    past_timeout: int  # leases expired and not yet taken back by the reaper
    next_lease: Lease | None  # the lease that expires first
    last_activity: datetime | None
    rates: dict[str, list[int]]  # push/pop/fail: tasks per bucket, oldest first, newest (partial) last
    failures_last_minute: int
    stream_backlog: int  # events in Redis not yet trimmed behind the snapshotter
    quarantined: int  # events Postgres refused, set aside (GET /history/quarantine lists them)
    snapshot_lag_seconds: float
    statuses: dict[str, int] | None  # from Postgres; None when it did not answer


class OrganisationFigures(msgspec.Struct):
    organisation: str
    depth: int
    depth_by_scheduler: dict[str, int]
    served: int | None  # tasks handed out so far (Postgres); None when it did not answer
    share_served: float | None  # of the tasks handed out to the organisations shown
    weight: float | None = None  # its weight in the fair pop; None with REDISCHED_FAIRNESS=none


class LimitGroupFigures(msgspec.Struct):
    scheduler: str
    group: str
    in_use: int  # dispatched and running
    limit: int | None  # concurrency; None: no concurrency limit
    spacing_seconds: float | None  # cooldown or rate spacing; None: neither
    next_allowed_at: datetime | None  # None: a task may go now (as far as spacing goes)
    waiting: int  # queued in the group


class ApiProcess(msgspec.Struct):
    name: str
    seen_seconds_ago: float


class Overview(msgspec.Struct):
    now: datetime
    role: str
    refresh_seconds: float
    bucket_seconds: int
    schedulers: list[SchedulerFigures]
    organisations: list[OrganisationFigures]
    organisations_capped: bool  # more organisations have work than are shown
    limits: list[LimitGroupFigures] | None  # None: no limit rules configured
    limits_capped: bool  # more limit groups are known than are shown
    snapshot_lag_seconds: float
    quarantined: int
    redis_used_memory: int
    redis_max_memory: int
    api_processes: list[ApiProcess]
    history_error: str | None  # why the Postgres figures are missing


async def overview(services: Services, role: str) -> Overview:
    settings = services.settings
    snapshot = await read_snapshot(
        services.redis, services.queues.layout, buckets=RATE_BUCKETS,
        max_orgs=settings.dashboard_max_organisations,
        max_groups=settings.dashboard_max_limit_groups,
    )
    organisations = sorted({org for stats in snapshot.queues.values() for org in stats.organisations})
    statuses, served, error = await _history(services, organisations)
    weights = await services.queues.weights() if services.queues.layout.fair else None
    return Overview(
        now=us_to_datetime(max(stats.now_us for stats in snapshot.queues.values())),
        role=role,
        refresh_seconds=settings.dashboard_refresh_seconds,
        bucket_seconds=RATE_BUCKET_SECONDS,
        schedulers=[_scheduler(snapshot.queues[sid], statuses) for sid in SCHEDULERS if sid in snapshot.queues],
        organisations=_organisations(snapshot, organisations, served, weights),
        organisations_capped=any(stats.organisations_capped for stats in snapshot.queues.values()),
        limits=_limits(snapshot) if settings.limits else None,
        limits_capped=any(stats.groups_capped for stats in snapshot.queues.values()),
        snapshot_lag_seconds=max((stats.snapshot_lag_seconds for stats in snapshot.queues.values()), default=0.0),
        quarantined=sum(stats.quarantined for stats in snapshot.queues.values()),
        redis_used_memory=snapshot.used_memory,
        redis_max_memory=snapshot.max_memory,
        api_processes=[ApiProcess(name, round(ago, 1)) for name, ago in sorted(snapshot.api_processes)],
        history_error=error,
    )


async def _history(
    services: Services, organisations: list[str]
) -> tuple[dict[tuple[str, str], int] | None, dict[tuple[str, str], int] | None, str | None]:
    try:
        async with asyncio.timeout(HISTORY_TIMEOUT_SECONDS):
            statuses = await services.tasks.status_counts()
            served = await services.tasks.served_by_organisation(organisations)
    except Exception as exc:  # the Redis half of the page is worth showing without Postgres
        log.warning("dashboard: Postgres figures unavailable: %r", exc)
        return None, None, f"Postgres did not answer ({type(exc).__name__})"
    return statuses, served, None


def _scheduler(stats: QueueStats, statuses: dict[tuple[str, str], int] | None) -> SchedulerFigures:
    now_ms = stats.now_us / 1000
    lease = None
    if stats.next_lease is not None:
        head = stats.next_lease
        lease = Lease(
            head.task_id,
            head.status,
            held_seconds=round(max(0.0, (stats.now_us - head.modified_us) / 1e6), 1),
            expires_in_seconds=round((head.expires_ms - now_ms) / 1000, 1),
        )
    per_minute = 60 // RATE_BUCKET_SECONDS
    return SchedulerFigures(
        id=stats.queue_id,
        depth=stats.depth,
        leased=stats.leased,
        past_timeout=stats.expired,
        next_lease=lease,
        last_activity=us_to_datetime(stats.last_activity_us) if stats.last_activity_us else None,
        rates=stats.rates,
        failures_last_minute=sum(stats.rates.get("fail", [])[-per_minute:]),
        stream_backlog=stats.stream_length,
        quarantined=stats.quarantined,
        snapshot_lag_seconds=stats.snapshot_lag_seconds,
        statuses=None if statuses is None else {s: statuses.get((stats.queue_id, s), 0) for s in STATUSES},
    )


def _organisations(
    snapshot: RedisSnapshot,
    organisations: list[str],
    served: dict[tuple[str, str], int] | None,
    weights: dict[str, float] | None,
) -> list[OrganisationFigures]:
    served_by_org = None
    if served is not None:
        served_by_org = {org: sum(n for (_, o), n in served.items() if o == org) for org in organisations}
    total_served = sum(served_by_org.values()) if served_by_org else 0
    figures = []
    for org in organisations:
        by_scheduler = {sid: stats.organisations[org] for sid, stats in snapshot.queues.items() if org in stats.organisations}
        served_n = served_by_org.get(org, 0) if served_by_org is not None else None
        share = served_n / total_served if served_n is not None and total_served else None
        weight = weights.get(org, 1.0) if weights is not None else None
        figures.append(OrganisationFigures(org, sum(by_scheduler.values()), by_scheduler, served_n, share, weight))
    figures.sort(key=lambda figure: (-figure.depth, figure.organisation))
    return figures


def _limits(snapshot: RedisSnapshot) -> list[LimitGroupFigures]:
    figures = []
    for sid, stats in snapshot.queues.items():
        now_ms = stats.now_us / 1000
        for group, state in stats.groups.items():
            next_at = state.next_allowed_ms if state.next_allowed_ms > now_ms else None
            figures.append(
                LimitGroupFigures(
                    sid,
                    group,
                    in_use=state.in_use,
                    limit=state.concurrency or None,
                    spacing_seconds=state.spacing_ms / 1000 if state.spacing_ms else None,
                    next_allowed_at=us_to_datetime(next_at * 1000) if next_at else None,
                    waiting=state.queued,
                )
            )
    figures.sort(key=lambda figure: (figure.scheduler, figure.group))
    return figures
