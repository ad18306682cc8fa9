"""The normalizer scheduler: one task per enabled normalizer that reads a raw file Bytes
received. Normalizer tasks have no schedules. A raw file of mime type ``openkat/deschedule``
is a boefje asking not to run again on that object: its schedule goes, and no normalizer
reads the file (upstream PR #5007)."""

from __future__ import annotations

import logging

from redisched.clients.amqp import RawFileReceived
from redisched.clients.http import Plugin
from redisched.models import BoefjeMeta, BoefjeTask, Normalizer, NormalizerTask
from redisched.schedulers.context import SchedulerContext
from redisched.schedulers.rankers import RankContext, rank

log = logging.getLogger(__name__)

SCHEDULER_ID = "normalizer"
DESCHEDULE = "openkat/deschedule"


def is_error(mime_type: str) -> bool:
    """Bytes marks the raw file of a failed boefje run with an ``error/...`` mime type."""
    return mime_type.startswith("error/")


class NormalizerScheduler:
    def __init__(self, ctx: SchedulerContext) -> None:
        self.ctx = ctx

    async def handle_raw_file(self, event: RawFileReceived) -> None:
        raw_data, organisation = event.raw_data, event.organization
        mime_types = list(dict.fromkeys(mime.value for mime in raw_data.mime_types))
        if DESCHEDULE in mime_types:
            await self._deschedule(raw_data.boefje_meta)
            return
        if any(is_error(mime_type) for mime_type in mime_types):
            log.debug("raw file %s holds an error: no normalizer tasks", raw_data.id)
            return
        for plugin in await self._enabled_normalizers(organisation, mime_types):
            await self._push(organisation, NormalizerTask(normalizer=normalizer_of(plugin), raw_data=raw_data), plugin)

    async def _deschedule(self, meta: BoefjeMeta) -> None:
        task = BoefjeTask(boefje=meta.boefje, input_ooi=meta.input_ooi, organization=meta.organization)
        what = (meta.boefje.id, meta.input_ooi, meta.organization)
        deleted = await self.ctx.history.delete_schedule("boefje", task.hash())
        if deleted is None:
            log.info("%s on %s in %s asked to be descheduled: it has no schedule", *what)
            return
        schedule_id, live_tasks = deleted
        await self.ctx.outlet.unlink_schedule(schedule_id, live_tasks)
        log.info("descheduled %s on %s in %s: schedule %s deleted", *what, schedule_id)

    async def _enabled_normalizers(self, organisation: str, mime_types: list[str]) -> list[Plugin]:
        """Each enabled normalizer consuming one of the mime types, once."""
        found: dict[str, Plugin] = {}
        for mime_type in mime_types:
            for plugin in await self.ctx.katalogus.get_plugins(organisation, "normalizer", consumes=mime_type):
                if plugin.enabled:
                    found.setdefault(plugin.id, plugin)
        return list(found.values())

    async def _push(self, organisation: str, task: NormalizerTask, plugin: Plugin) -> None:
        context = RankContext(SCHEDULER_ID, organisation, task, created_at=self.ctx.clock(), plugin=plugin)
        if await self.ctx.outlet.push(SCHEDULER_ID, organisation, task, rank(context)):
            log.info("created normalizer task %s: %s on raw file %s", task.id, plugin.id, task.raw_data.id)
        else:
            log.debug("normalizer task %s on raw file %s is queued already", plugin.id, task.raw_data.id)


def normalizer_of(plugin: Plugin) -> Normalizer:
    return Normalizer(id=plugin.id, name=plugin.name, version=plugin.version)
