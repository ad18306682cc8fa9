"""The report scheduler: due report schedules become tasks; deadlines move on or clear."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from redisched.schedulers.report import SCHEDULES_PER_BATCH, ReportScheduler
from tests.simulation.fakes import Clock, fake_context
from tests.simulation.world import World


@pytest.fixture
def setup():
    clock = Clock()
    ctx, outlet, history = fake_context(World(), clock)
    return ReportScheduler(ctx), outlet, history, clock


def recipe(org: str = "org1") -> dict:
    return {"organisation_id": org, "report_recipe_id": str(uuid.uuid4())}


async def test_a_due_cron_schedule_fires_with_priority_now_and_moves_to_the_next_run(setup):
    scheduler, outlet, history, clock = setup
    schedule = history.add_schedule("report", recipe(), clock.now - timedelta(minutes=5), cron="0 8 * * *")
    await scheduler.fire_due()
    [task] = outlet.pushed
    assert (task.scheduler_id, task.organisation, task.priority) == ("report", "org1", int(clock.now.timestamp()))
    assert task.data == schedule.data
    assert history.schedules[schedule.id].deadline_at == clock.now.replace(hour=8)


async def test_a_one_off_schedule_fires_once_and_its_deadline_clears(setup):
    scheduler, outlet, history, clock = setup
    schedule = history.add_schedule("report", recipe(), clock.now - timedelta(minutes=5))
    await scheduler.fire_due()
    await scheduler.fire_due()
    assert len(outlet.pushed) == 1 and history.schedules[schedule.id].deadline_at is None


async def test_schedules_not_due_or_disabled_do_not_fire(setup):
    scheduler, outlet, history, clock = setup
    history.add_schedule("report", recipe(), clock.now + timedelta(minutes=5))
    off = history.add_schedule("report", recipe(), clock.now - timedelta(minutes=5))
    await history.disable(off.id)
    await scheduler.fire_due()
    assert outlet.pushed == []


async def test_every_due_schedule_fires_beyond_one_batch(setup):
    scheduler, outlet, history, clock = setup
    for _ in range(SCHEDULES_PER_BATCH + 3):
        history.add_schedule("report", recipe(), clock.now - timedelta(minutes=5))
    await scheduler.fire_due()
    assert len(outlet.pushed) == SCHEDULES_PER_BATCH + 3


async def test_a_schedule_with_data_that_is_no_report_task_is_skipped_and_moves_on(setup):
    scheduler, outlet, history, clock = setup
    broken = history.add_schedule("report", recipe(), clock.now - timedelta(minutes=5), cron="0 8 * * *")
    history._set(broken.id, data={"organisation_id": "org1"})
    await scheduler.fire_due()
    assert outlet.pushed == [] and history.schedules[broken.id].deadline_at == clock.now.replace(hour=8)
