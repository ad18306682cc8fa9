"""The boefje scheduler: boefje tasks for objects whose scan profile changed, for every object a
newly enabled boefje may scan, and for schedules that came due.

Every path ends in ``create_tasks``: it asks our history and Bytes whether each task ran
recently or still runs (``rules.verdict``), fails tasks that stalled in ``dispatched``, adds
the tasks of organisations whose boefje config duplicates this one (cross-organisation
dedup), and pushes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import msgspec

from redisched.clients.amqp import MutationOperation, ScanProfileMutation
from redisched.clients.http import OOI, ExternalServiceError, Plugin
from redisched.history.scheduler_queries import TaskState
from redisched.history.schedules import next_cron_run
from redisched.limit_rules import plugin_rule
from redisched.models import Boefje, BoefjeTask, Schedule, ScheduleCreate, TaskStatus
from redisched.schedulers import rules
from redisched.schedulers.context import SchedulerContext, gather_bounded
from redisched.schedulers.rankers import RankContext, rank
from redisched.schedulers.seen import SeenBoefjes

log = logging.getLogger(__name__)

SCHEDULER_ID = "boefje"
MAX_SCAN_LEVEL = 4
OBJECTS_PER_BATCH = 1000  # Octopoes' page size
SCHEDULES_PER_BATCH = 100
# A due schedule is claimed this long while it is checked; if the worker dies meanwhile, it
# is due again then.
CLAIM_HOLD = timedelta(minutes=10)


@dataclass(frozen=True)
class Candidate:
    """A task the scheduler considers creating."""

    plugin: Plugin
    input_ooi: str | None
    schedule: bool  # link (or create) its schedule

    def task(self, organisation: str) -> BoefjeTask:
        return BoefjeTask(boefje=boefje_of(self.plugin), input_ooi=self.input_ooi, organization=organisation)


def boefje_of(plugin: Plugin) -> Boefje:
    return Boefje(id=plugin.id, name=plugin.name, version=plugin.version, oci_image=plugin.oci_image)


class BoefjeScheduler:
    def __init__(self, ctx: SchedulerContext, seen: SeenBoefjes) -> None:
        self.ctx = ctx
        self.seen = seen

    # --- scan profile mutations ----------------------------------------------------------

    async def handle_mutation(self, mutation: ScanProfileMutation) -> None:
        ooi, organisation = mutation.value, mutation.client_id
        if ooi is None:
            return
        if mutation.operation == MutationOperation.DELETE:
            cancelled = await self.ctx.outlet.cancel_queued(SCHEDULER_ID, organisation, ooi.primary_key)
            if cancelled:
                log.info("%s deleted in %s: %d queued boefje tasks cancelled", ooi.primary_key, organisation, cancelled)
            return
        plugins = await self.ctx.katalogus.get_plugins(organisation, "boefje", consumes=ooi.object_type)
        candidates = [
            Candidate(plugin, ooi.primary_key, rules.gets_schedule(plugin))
            for plugin in plugins
            if rules.permitted(plugin, ooi.scan_profile.level) and rules.runs_on(plugin, mutation.operation.value)
        ]
        await self.create_tasks(organisation, candidates)

    # --- new boefjes -----------------------------------------------------------------------

    async def sweep_new_boefjes(self) -> None:
        """Tasks for every object a boefje enabled since the last sweep may scan."""
        for organisation in await self.ctx.katalogus.get_organisations():
            plugins = await self.ctx.katalogus.get_plugins(organisation, "boefje", fresh=True)
            sweepable = {p.id: p for p in plugins if p.enabled and p.type == "boefje" and p.consumes}
            for boefje_id in await self.seen.claim_new(organisation, sweepable):
                await self._sweep_or_forget(organisation, sweepable[boefje_id])

    async def _sweep_or_forget(self, organisation: str, plugin: Plugin) -> None:
        try:
            await self._sweep(organisation, plugin)
        except BaseException:
            await self.seen.forget(organisation, plugin.id)
            raise

    async def _sweep(self, organisation: str, plugin: Plugin) -> None:
        if plugin.run_on:
            return  # runs on scan-profile events only
        log.info("new boefje %s in %s: creating tasks for its objects", plugin.id, organisation)
        levels = range(plugin.scan_level, MAX_SCAN_LEVEL + 1)
        batch: list[Candidate] = []
        async for ooi in self.ctx.octopoes.iter_objects(organisation, plugin.consumes, levels):
            batch.append(Candidate(plugin, ooi.primary_key, schedule=True))
            if len(batch) == OBJECTS_PER_BATCH:
                await self.create_tasks(organisation, batch)
                batch = []
        await self.create_tasks(organisation, batch)

    # --- due schedules ---------------------------------------------------------------------

    async def reschedule_due(self) -> None:
        """A new task for every due schedule whose boefje and object still qualify. All due
        schedules are handled, oldest deadline first, in batches other workers skip."""
        while True:
            now = self.ctx.clock()
            due = await self.ctx.history.claim_due(SCHEDULER_ID, now, SCHEDULES_PER_BATCH, now + CLAIM_HOLD)
            await gather_bounded((self._reschedule(schedule) for schedule in due), self.ctx.concurrency)
            if len(due) < SCHEDULES_PER_BATCH:
                return

    async def _reschedule(self, schedule: Schedule) -> None:
        try:
            task = msgspec.convert(schedule.data, BoefjeTask)
        except msgspec.ValidationError as exc:
            await self._disable(schedule, f"data is not a boefje task: {exc}")
            return
        plugin = await self.ctx.katalogus.get_plugin(schedule.organisation, task.boefje.id)
        problem = await self._unschedulable(schedule.organisation, task, plugin)
        if problem is not None:
            await self._disable(schedule, problem)
            return
        if plugin.cron is not None and plugin.cron != schedule.schedule:
            await self.ctx.history.set_cron(schedule.id, plugin.cron, next_cron_run(plugin.cron, self.ctx.clock()))
        [outcome] = await self.create_tasks(schedule.organisation, [Candidate(plugin, task.input_ooi, True)])
        if not outcome.create:
            # Not again next minute: not before the reason can be over.
            await self.ctx.history.postpone(schedule.id, outcome.retry_at)

    async def _unschedulable(self, organisation: str, task: BoefjeTask, plugin: Plugin | None) -> str | None:
        """Why a schedule can no longer run, or None when it can."""
        if plugin is None:
            return "the boefje is gone"
        if not plugin.enabled:
            return "the boefje is disabled"
        if plugin.type != "boefje":
            return f"the plugin is a {plugin.type}"
        if plugin.run_on:
            return "the boefje runs on scan-profile events only"
        if not task.input_ooi:
            return None
        ooi = await self.ctx.octopoes.get_object(organisation, task.input_ooi)
        if ooi is None:
            return "the object is gone"
        if ooi.object_type not in plugin.consumes:
            return f"the boefje no longer consumes {ooi.object_type}"
        if not rules.permitted(plugin, ooi.scan_level):
            return f"scan level {ooi.scan_level} is below the boefje's {plugin.scan_level}"
        return None

    async def _disable(self, schedule: Schedule, reason: str) -> None:
        log.info("disabling boefje schedule %s (%s): %s", schedule.id, schedule.hash, reason)
        await self.ctx.history.disable(schedule.id)

    # --- creating tasks --------------------------------------------------------------------

    async def create_tasks(self, organisation: str, candidates: Sequence[Candidate]) -> list[rules.Verdict]:
        """Create the candidates' tasks that are due; one verdict per candidate, in order."""
        tasks = [candidate.task(organisation) for candidate in candidates]
        latest = await self.ctx.history.latest_tasks([task.hash() for task in tasks])
        decisions = (self._create(c, t, latest.get(t.hash())) for c, t in zip(candidates, tasks))
        return await gather_bounded(decisions, self.ctx.concurrency)

    async def _create(self, candidate: Candidate, task: BoefjeTask, latest: TaskState | None) -> rules.Verdict:
        outcome = await self._judge(candidate, task, latest)
        if not outcome.create:
            log.debug("no %s task on %s in %s: %s", task.boefje.id, task.input_ooi, task.organization, outcome.reason)
            return outcome
        twins = await self._dedup_twins(task, candidate.plugin)
        if twins:
            task.deduplication_key = task.id
        for each in (task, *twins):
            await self._push(each, candidate)
        return outcome

    async def _judge(self, candidate: Candidate, task: BoefjeTask, latest: TaskState | None) -> rules.Verdict:
        ctx = self.ctx
        now = ctx.clock()
        if rules.is_stalled(latest, now, ctx.grace_period) and await self._fail_stalled(latest):
            latest = latest._replace(status=TaskStatus.FAILED)
        fresh_for = rules.rerun_after(candidate.plugin, ctx.grace_period)
        outcome = rules.verdict(latest, None, now, fresh_for, ctx.grace_period)
        if not outcome.create:
            return outcome
        last_run = await ctx.bytes.get_last_run_boefje(task.boefje.id, task.input_ooi, task.organization)
        return rules.verdict(latest, last_run, now, fresh_for, ctx.grace_period)

    async def _fail_stalled(self, stalled: TaskState) -> bool:
        """Mark a task that stalled in ``dispatched`` failed; False when Redis shows it moved on
        (the history is written behind Redis)."""
        live_status = await self.ctx.outlet.live_status(stalled.id)
        if live_status is None:
            await self.ctx.history.mark_failed(stalled.id)
        elif live_status == TaskStatus.DISPATCHED.value:
            await self.ctx.outlet.set_status(stalled.id, TaskStatus.FAILED)
        else:
            return False
        log.warning("boefje task %s stalled in dispatched: marked failed", stalled.id)
        return True

    async def _push(self, task: BoefjeTask, candidate: Candidate) -> None:
        plugin, organisation = candidate.plugin, task.organization
        if candidate.schedule and plugin.cron is not None:
            await self._ensure_cron_schedule(task, plugin.cron)
        priority = rank(RankContext(SCHEDULER_ID, organisation, task, created_at=self.ctx.clock(), plugin=plugin))
        what = (task.boefje.id, task.input_ooi, organisation)
        limit = plugin_rule(plugin.id, plugin.rate_limit_group, plugin.rate_limit_interval)
        pushed = await self.ctx.outlet.push(
            SCHEDULER_ID, organisation, task, priority, schedule=candidate.schedule, plugin_rule=limit
        )
        if pushed:
            log.info("created boefje task %s: %s on %s in %s", task.id, *what)
        else:
            log.debug("boefje task %s on %s in %s is queued already", *what)

    async def _ensure_cron_schedule(self, task: BoefjeTask, cron: str) -> None:
        """A boefje with a cron gets a schedule that follows it (the push links it); pushes
        alone would create one that runs a grace period later instead."""
        await self.ctx.history.create_schedule(
            ScheduleCreate(
                scheduler_id=SCHEDULER_ID,
                organisation=task.organization,
                data=msgspec.to_builtins(task),
                schedule=cron,
                deadline_at=next_cron_run(cron, self.ctx.clock()),
            )
        )

    # --- cross-organisation dedup ----------------------------------------------------------

    async def _dedup_twins(self, task: BoefjeTask, plugin: Plugin) -> list[BoefjeTask]:
        """Tasks for the other organisations whose config of this boefje duplicates this one's
        and that hold the same object at a level the boefje may scan: they share the task's id
        as ``deduplication_key``, so a runner pops them together and runs the boefje once.
        As in mula, a failure to find them is logged and the task goes ahead alone."""
        if not task.input_ooi:
            return []
        try:
            holders = await self._duplicate_holders(task)
        except ExternalServiceError as exc:
            log.warning("no cross-organisation dedup for %s on %s: %s", task.boefje.id, task.input_ooi, exc)
            return []
        return [
            BoefjeTask(
                boefje=task.boefje,
                input_ooi=task.input_ooi,
                organization=organisation,
                deduplication_key=task.id,
            )
            for organisation, ooi in sorted(holders.items())
            if organisation != task.organization and rules.permitted(plugin, ooi.scan_level)
        ]

    async def _duplicate_holders(self, task: BoefjeTask) -> dict[str, OOI]:
        """The duplicating organisations that hold the task's object, with their copy of it."""
        configs = await self.ctx.katalogus.get_configs(
            task.organization, boefje_id=task.boefje.id, enabled=True, with_duplicates=True
        )
        if not configs or not configs[0].duplicates:
            return {}
        organisations = {config.organisation_id for config in configs[0].duplicates}
        holders = await self.ctx.octopoes.get_object_clients(task.input_ooi, organisations)
        return {organisation: ooi for organisation, ooi in holders.items() if organisation in organisations}
