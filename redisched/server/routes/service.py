"""``/``, ``/health`` and ``/metrics``."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from redisched import __version__
from redisched.history import quarantine
from redisched.history.snapshotter import backlog_seconds
from redisched.models import SCHEDULERS, STATUSES, ServiceHealth
from redisched.server.auth import authenticated
from redisched.server.inputs import query_bool
from redisched.server.responses import JSON
from redisched.server.services import services
from redisched.services import Services

PROBE_TIMEOUT_SECONDS = 2.0


async def root(_request: Request) -> JSON:
    return JSON(None)


async def health(request: Request) -> JSON:
    """mula's health; with ``?externals=true`` also Katalogus, Octopoes and Bytes in
    ``externals``, and our own Redis and Postgres in ``results`` (``healthy`` follows them).
    The probes' answers are reused for ``REDISCHED_HEALTH_CACHE_SECONDS``; with auth on, a
    caller without a token gets ``healthy`` alone."""
    if not query_bool(request, "externals", False):
        return JSON(ServiceHealth(version=__version__))
    svc = services(request)
    externals, own = await svc.health_checks.get(None, lambda: _probe_all(svc))
    healthy = all(result.healthy for result in own)
    if not authenticated(request):
        return JSON(ServiceHealth(version=__version__, healthy=healthy))
    return JSON(ServiceHealth(version=__version__, healthy=healthy, results=own, externals=externals))


async def _probe_all(svc: Services) -> tuple[dict[str, bool], list[ServiceHealth]]:
    externals, own = await asyncio.gather(svc.externals.health(), _own_dependencies(svc))
    return externals, own


async def metrics(request: Request) -> Response:
    """Process metrics plus the queue gauges, computed at scrape time: a ZCARD per queue and
    the status counters Postgres keeps (no table scan)."""
    svc = services(request)
    qsizes = await asyncio.gather(*(svc.queues.qsize(sid) for sid in SCHEDULERS))
    status_counts = await svc.tasks.status_counts()
    layout = svc.queues.layout
    backlog = await backlog_seconds(svc.queues.redis, layout)
    quarantined = await quarantine.counts(svc.queues.redis, layout)
    set_aside = await svc.queues.set_aside_counts()
    families = [
        *_queue_metrics(qsizes, status_counts),
        _per_scheduler_gauge(
            "redisched_snapshot_lag_seconds", "How long the oldest event Postgres does not have yet has waited", backlog
        ),
        _per_scheduler_gauge(
            "redisched_history_quarantined", "Events Postgres refused, set aside (GET /history/quarantine)", quarantined
        ),
        _set_aside_metric(set_aside),
        *(await _fairness_metrics(svc) if layout.fair else []),
    ]
    body = generate_latest(REGISTRY) + generate_latest(_Scrape(families))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _queue_metrics(qsizes: list[int], status_counts: dict[tuple[str, str], int]) -> list[Metric]:
    qsize = GaugeMetricFamily("scheduler_qsize", "Tasks queued now", labels=["scheduler_id"])
    for scheduler_id, size in zip(SCHEDULERS, qsizes):
        qsize.add_metric([scheduler_id], size)
    counts = GaugeMetricFamily(
        "scheduler_task_status_counts", "Tasks per status (history)", labels=["scheduler_id", "status"]
    )
    for scheduler_id in SCHEDULERS:
        for status in STATUSES:
            counts.add_metric([scheduler_id, status], status_counts.get((scheduler_id, status), 0))
    return [qsize, counts]


def _per_scheduler_gauge(name: str, documentation: str, values: dict[str, float]) -> Metric:
    gauge = GaugeMetricFamily(name, documentation, labels=["scheduler_id"])
    for scheduler_id, value in values.items():
        gauge.add_metric([scheduler_id], value)
    return gauge


def _set_aside_metric(set_aside: dict[str, tuple[int, int]]) -> Metric:
    healed = CounterMetricFamily(
        "redisched_queue_set_aside",
        "What the queue scripts moved aside to go on: records that do not decode (to <queue>:quarantine), "
        "members naming no live queued task (removed)",
        labels=["scheduler_id", "kind"],
    )
    for scheduler_id, (records, members) in set_aside.items():
        healed.add_metric([scheduler_id, "record"], records)
        healed.add_metric([scheduler_id, "member"], members)
    return healed


FAIR_METRICS_MAX_ORGANISATIONS = 1000  # per queue partition, least virtual time first


async def _fairness_metrics(svc: Services) -> list[Metric]:
    """Per organisation and queue (REDISCHED_FAIRNESS=organisation): queued tasks, tasks
    served with fairness on, and the weight."""
    per_queue = await asyncio.gather(
        *(svc.queues.organisation_shares(sid, FAIR_METRICS_MAX_ORGANISATIONS) for sid in SCHEDULERS)
    )
    queued = GaugeMetricFamily(
        "redisched_organisation_queued", "Tasks queued per organisation (fair pop)", labels=["scheduler_id", "organisation"]
    )
    served = CounterMetricFamily(
        "redisched_organisation_served", "Tasks handed out per organisation with fairness on",
        labels=["scheduler_id", "organisation"],
    )
    share = GaugeMetricFamily(
        "redisched_organisation_share_served", "An organisation's share of the tasks handed out with fairness on",
        labels=["scheduler_id", "organisation"],
    )
    weights: dict[str, float] = {}
    for scheduler_id, shares in zip(SCHEDULERS, per_queue):
        for figure in shares:
            queued.add_metric([scheduler_id, figure.organisation], figure.depth)
            served.add_metric([scheduler_id, figure.organisation], figure.served)
            share.add_metric([scheduler_id, figure.organisation], figure.share_served or 0.0)
            weights[figure.organisation] = figure.weight
    weight = GaugeMetricFamily("redisched_organisation_weight", "An organisation's weight in the fair pop", labels=["organisation"])
    for organisation, value in sorted(weights.items()):
        weight.add_metric([organisation], value)
    return [queued, served, share, weight]


class _Scrape:
    """Metrics computed for one scrape, in the shape ``generate_latest`` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def _own_dependencies(svc: Services) -> list[ServiceHealth]:
    redis_ok, postgres_ok = await asyncio.gather(_probe(svc.redis.ping()), _probe(_postgres_answers(svc)))
    return [
        ServiceHealth(service="redis", healthy=redis_ok, version=""),
        ServiceHealth(service="postgres", healthy=postgres_ok, version=""),
    ]


async def _postgres_answers(svc: Services) -> bool:
    async with svc.tasks.pool.connection(timeout=PROBE_TIMEOUT_SECONDS) as conn:
        await conn.execute("SELECT 1")
    return True


async def _probe(check) -> bool:
    try:
        return bool(await asyncio.wait_for(check, PROBE_TIMEOUT_SECONDS))
    except Exception:
        return False
