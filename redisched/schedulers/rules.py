"""The boefje scheduler's decision rules, as pure functions of what Katalogus, Octopoes, Bytes
and the history say. ``boefje.py`` gathers those answers and acts on the verdicts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from redisched.clients.http import Plugin
from redisched.history.scheduler_queries import TaskState
from redisched.models import BoefjeMeta, TaskStatus

IN_PROGRESS = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.DISPATCHED, TaskStatus.RUNNING})


class Verdict(NamedTuple):
    create: bool
    reason: str
    retry_at: datetime | None = None  # when the blocking reason may be over


CREATE = Verdict(True, "due")


def permitted(plugin: Plugin, scan_level: int | None) -> bool:
    """An enabled boefje may scan an object whose clearance is at least its scan level."""
    return plugin.enabled and scan_level is not None and plugin.scan_level <= scan_level


def runs_on(plugin: Plugin, operation: str) -> bool:
    """Whether a scan-profile mutation of this kind (create/update) triggers the boefje:
    a boefje with ``run_on`` runs on those operations only, every other on any."""
    return not plugin.run_on or operation in plugin.run_on


def gets_schedule(plugin: Plugin) -> bool:
    """Boefjes that run on events (``run_on``) are never rescheduled."""
    return not plugin.run_on


def rerun_after(plugin: Plugin, grace_period: timedelta) -> timedelta:
    """How long a boefje's result stays fresh: its ``interval`` (minutes), else the grace period."""
    if plugin.interval is not None and plugin.interval > 0:
        return timedelta(minutes=plugin.interval)
    return grace_period


def is_stalled(latest: TaskState | None, now: datetime, grace_period: timedelta) -> bool:
    """A task handed to a runner that never reported back within the grace period."""
    return latest is not None and latest.status == TaskStatus.DISPATCHED and now - latest.modified_at > grace_period


def verdict(
    latest: TaskState | None,
    last_run: BoefjeMeta | None,
    now: datetime,
    fresh_for: timedelta,
    grace_period: timedelta,
) -> Verdict:
    """Create the task, or say why not and until when. ``latest`` is the newest task with the
    same hash in our history, ``last_run`` the newest boefje meta Bytes has for it (or None
    when not asked yet)."""
    if latest is not None and latest.status in IN_PROGRESS:
        return Verdict(False, f"task {latest.status.value}", now + fresh_for)
    if _running_in_bytes(last_run, now, grace_period):
        return Verdict(False, "running according to bytes", now + fresh_for)
    finished = [moment for moment in _finish_times(latest, last_run) if now - moment < fresh_for]
    if finished:
        return Verdict(False, "ran within its grace period", max(finished) + fresh_for)
    return CREATE


def _running_in_bytes(last_run: BoefjeMeta | None, now: datetime, grace_period: timedelta) -> bool:
    # A run that started and never ended counts as running only within the grace period:
    # a boefje runner that crashed mid-run must not block the boefje forever.
    if last_run is None or last_run.started_at is None or last_run.ended_at is not None:
        return False
    return now - as_utc(last_run.started_at) < grace_period


def _finish_times(latest: TaskState | None, last_run: BoefjeMeta | None) -> list[datetime]:
    times = []
    if latest is not None:
        times.append(latest.modified_at)
    if last_run is not None and last_run.ended_at is not None:
        times.append(as_utc(last_run.ended_at))
    return times


def as_utc(moment: datetime) -> datetime:
    """Bytes may send naive times; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
