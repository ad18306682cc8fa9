"""The boefje decision rules, one behaviour per test."""

from __future__ import annotations

import uuid
from datetime import timedelta

from redisched.history.scheduler_queries import TaskState
from redisched.models import Boefje, BoefjeMeta, TaskStatus
from redisched.schedulers import rules
from tests.simulation.fakes import T0
from tests.simulation.world import boefje

GRACE = timedelta(hours=24)
NOW = T0


def task(status: TaskStatus, age: timedelta) -> TaskState:
    return TaskState(uuid.uuid4(), status, NOW - age)


def run(started_ago: timedelta, ended_ago: timedelta | None) -> BoefjeMeta:
    ended = NOW - ended_ago if ended_ago is not None else None
    return BoefjeMeta(id=uuid.uuid4(), boefje=Boefje(id="b"), organization="o", started_at=NOW - started_ago, ended_at=ended)


def test_a_boefje_may_scan_objects_cleared_at_or_above_its_scan_level():
    plugin = boefje("b", scan_level=2)
    assert rules.permitted(plugin, 2) and rules.permitted(plugin, 4)
    assert not rules.permitted(plugin, 1)


def test_a_disabled_boefje_or_an_object_without_scan_profile_is_not_permitted():
    assert not rules.permitted(boefje("b", scan_level=0, enabled=False), 4)
    assert not rules.permitted(boefje("b", scan_level=0), None)


def test_run_on_boefjes_run_on_their_operations_only_and_get_no_schedule():
    on_create = boefje("b", run_on=["create"])
    assert rules.runs_on(on_create, "create") and not rules.runs_on(on_create, "update")
    assert not rules.gets_schedule(on_create)
    plain = boefje("b")
    assert rules.runs_on(plain, "create") and rules.runs_on(plain, "update") and rules.gets_schedule(plain)


def test_the_interval_in_minutes_replaces_the_grace_period():
    assert rules.rerun_after(boefje("b", interval=90), GRACE) == timedelta(minutes=90)
    assert rules.rerun_after(boefje("b"), GRACE) == GRACE
    assert rules.rerun_after(boefje("b", interval=0), GRACE) == GRACE


def test_no_history_means_create():
    assert rules.verdict(None, None, NOW, GRACE, GRACE).create


def test_a_task_still_queued_dispatched_or_running_blocks_a_new_one():
    for status in (TaskStatus.QUEUED, TaskStatus.DISPATCHED, TaskStatus.RUNNING):
        outcome = rules.verdict(task(status, timedelta(days=3)), None, NOW, GRACE, GRACE)
        assert not outcome.create and outcome.retry_at == NOW + GRACE


def test_a_task_finished_within_the_grace_period_blocks_until_it_ends():
    outcome = rules.verdict(task(TaskStatus.COMPLETED, timedelta(hours=20)), None, NOW, GRACE, GRACE)
    assert not outcome.create and outcome.retry_at == NOW + timedelta(hours=4)
    assert rules.verdict(task(TaskStatus.FAILED, timedelta(hours=25)), None, NOW, GRACE, GRACE).create


def test_a_cancelled_task_counts_as_finished():
    assert rules.verdict(task(TaskStatus.CANCELLED, timedelta(hours=25)), None, NOW, GRACE, GRACE).create


def test_bytes_last_run_within_the_grace_period_blocks():
    recent = run(timedelta(hours=2), timedelta(hours=1))
    outcome = rules.verdict(None, recent, NOW, GRACE, GRACE)
    assert not outcome.create and outcome.retry_at == NOW + timedelta(hours=23)
    assert rules.verdict(None, run(timedelta(hours=30), timedelta(hours=29)), NOW, GRACE, GRACE).create


def test_the_newest_of_history_and_bytes_decides():
    older, newer = task(TaskStatus.COMPLETED, timedelta(hours=30)), run(timedelta(hours=3), timedelta(hours=2))
    outcome = rules.verdict(older, newer, NOW, GRACE, GRACE)
    assert outcome.retry_at == NOW + timedelta(hours=22)


def test_with_an_interval_a_run_older_than_it_no_longer_blocks():
    hourly = timedelta(minutes=60)
    assert rules.verdict(task(TaskStatus.COMPLETED, timedelta(minutes=61)), None, NOW, hourly, GRACE).create
    assert not rules.verdict(task(TaskStatus.COMPLETED, timedelta(minutes=59)), None, NOW, hourly, GRACE).create


def test_a_run_bytes_saw_start_but_not_end_blocks_only_within_the_grace_period():
    assert not rules.verdict(None, run(timedelta(hours=1), None), NOW, GRACE, GRACE).create
    assert rules.verdict(None, run(timedelta(hours=25), None), NOW, GRACE, GRACE).create


def test_naive_bytes_times_are_utc():
    naive = BoefjeMeta(
        id=uuid.uuid4(), boefje=Boefje(id="b"), organization="o",
        started_at=(NOW - timedelta(hours=2)).replace(tzinfo=None), ended_at=(NOW - timedelta(hours=1)).replace(tzinfo=None),
    )  # fmt: skip
    assert rules.verdict(None, naive, NOW, GRACE, GRACE).retry_at == NOW + timedelta(hours=23)


def test_only_a_dispatched_task_older_than_the_grace_period_is_stalled():
    assert rules.is_stalled(task(TaskStatus.DISPATCHED, timedelta(hours=25)), NOW, GRACE)
    assert not rules.is_stalled(task(TaskStatus.DISPATCHED, timedelta(hours=23)), NOW, GRACE)
    assert not rules.is_stalled(task(TaskStatus.RUNNING, timedelta(hours=25)), NOW, GRACE)
    assert not rules.is_stalled(None, NOW, GRACE)
