"""The report scheduler: a report task for every due report schedule. The schedule's deadline
moves to its next cron run, or is cleared for a one-off, in the transaction that locks it."""

from __future__ import annotations

import logging

import msgspec

from redisched.models import ReportTask, Schedule
from redisched.schedulers.context import SchedulerContext
from redisched.schedulers.rankers import RankContext, rank

log = logging.getLogger(__name__)

SCHEDULER_ID = "report"
SCHEDULES_PER_BATCH = 100


class ReportScheduler:
    def __init__(self, ctx: SchedulerContext) -> None:
        self.ctx = ctx

    async def fire_due(self) -> None:
        """Every due report schedule, oldest deadline first, in batches other workers skip."""
        while True:
            fired = await self.ctx.history.fire_due(SCHEDULER_ID, self.ctx.clock(), SCHEDULES_PER_BATCH, self._fire)
            if fired < SCHEDULES_PER_BATCH:
                return

    async def _fire(self, schedule: Schedule) -> None:
        try:
            task = msgspec.convert(schedule.data, ReportTask)
        except msgspec.ValidationError as exc:
            log.error("report schedule %s: data is not a report task (%s); skipped", schedule.id, exc)
            return
        organisation = task.organisation_id
        priority = rank(RankContext(SCHEDULER_ID, organisation, task, created_at=self.ctx.clock()))
        if await self.ctx.outlet.push(SCHEDULER_ID, organisation, task, priority):
            log.info("created report task for recipe %s in %s", task.report_recipe_id, organisation)
        else:
            log.info("report task for recipe %s in %s is queued already", task.report_recipe_id, organisation)
