"""Rankers: the priority a scheduler gives a task it creates. Lower runs first.

A ranker is a plain function ``(RankContext) -> int``; the registry maps a scheduler id to
one. The defaults are mula v1.20's:

- ``boefje``: creation time in epoch seconds (mula's ``BoefjeRankerTimeBased``, the one its
  boefje scheduler uses; the older grace-period ``BoefjeRanker`` is unused in v1.20).
- ``normalizer``: ``raw_data.boefje_meta.ended_at`` in epoch seconds, so older raw files go
  first (``NormalizerRanker``). Without ``ended_at`` mula fails to create the task; we fall
  back to ``started_at``, then the creation time.
- ``report``: creation time ("now") in epoch seconds, as mula's report scheduler does.

Tasks pushed by hand over the API keep the priority they were sent with; rankers only rank
tasks the schedulers create. A priority must not be 0 (the API refuses it).

Plugging in your own ranker, e.g. to hold back intrusive boefjes by an hour::

    from redisched.schedulers.rankers import RankContext, creation_time, register_ranker

    def intrusive_later(ctx: RankContext) -> int:
        intrusive = ctx.plugin is not None and ctx.plugin.scan_level >= 3
        return creation_time(ctx) + (3600 if intrusive else 0)

    register_ranker("boefje", intrusive_later)

or by import path, e.g. from a setting: ``register_ranker("boefje", "mypkg.ranking:intrusive_later")``.
Register before the schedulers start; a ranker is called on the scheduler's event loop, so it
must be fast and must not block.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redisched.models import NormalizerTask, utcnow

if TYPE_CHECKING:
    from redisched.clients.http.katalogus import Plugin


@dataclass(frozen=True, slots=True)
class RankContext:
    """What a ranker may look at. ``payload`` is the task's parsed ``data`` (a BoefjeTask,
    NormalizerTask or ReportTask); ``plugin`` the Katalogus plugin, when the scheduler has it."""

    scheduler_id: str
    organisation: str
    payload: Any
    created_at: datetime = field(default_factory=utcnow)
    plugin: Plugin | None = None


Ranker = Callable[[RankContext], int]


def epoch_seconds(moment: datetime) -> int:
    """Whole seconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def creation_time(ctx: RankContext) -> int:
    return epoch_seconds(ctx.created_at)


def raw_file_age(ctx: RankContext) -> int:
    payload: NormalizerTask = ctx.payload
    meta = payload.raw_data.boefje_meta
    return epoch_seconds(meta.ended_at or meta.started_at or ctx.created_at)


_RANKERS: dict[str, Ranker] = {
    "boefje": creation_time,
    "normalizer": raw_file_age,
    "report": creation_time,
}


def register_ranker(scheduler_id: str, ranker: Ranker | str) -> Ranker:
    """Use ``ranker`` (a function or a ``"module:attribute"`` path) for ``scheduler_id`` from
    now on; returns the ranker it replaces, so a test can put it back."""
    previous = get_ranker(scheduler_id)
    _RANKERS[scheduler_id] = _import(ranker) if isinstance(ranker, str) else ranker
    return previous


def get_ranker(scheduler_id: str) -> Ranker:
    try:
        return _RANKERS[scheduler_id]
    except KeyError:
        raise KeyError(f"no ranker for scheduler {scheduler_id!r}") from None


def rank(ctx: RankContext) -> int:
    """The priority the registered ranker gives this task."""
    return get_ranker(ctx.scheduler_id)(ctx)


def _import(path: str) -> Ranker:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"ranker path must look like 'module:function', got {path!r}")
    ranker = getattr(importlib.import_module(module_name), attribute)
    if not callable(ranker):
        raise TypeError(f"ranker {path!r} is not callable")
    return ranker
