"""Reconciliation: after Redis lost data (a restart without persistence, a failover, a
FLUSHALL), put back every task Postgres knows as live, and the schedule mirror.

Run it after the snapshot backlog is drained (the caller waits on ``wait_caught_up``): a task
Redis still holds is never touched (the restore script checks), so running it on a healthy
Redis changes nothing, and running it twice restores nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redisched.history.schedules import ScheduleStore
from redisched.history.tasks import TaskStore
from redisched.models import SCHEDULERS
from redisched.queue.queue import TaskQueues
from redisched.queue.records import record_from_task

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    restored: int = 0
    present: int = 0
    schedules: int = 0


async def reconcile(queues: TaskQueues, tasks: TaskStore, schedules: ScheduleStore) -> Reconciled:
    result = Reconciled()
    for scheduler_id in SCHEDULERS:
        if SCHEDULERS[scheduler_id].has_schedules:
            result.schedules += await schedules.rebuild_mirror(scheduler_id)
        for live in await tasks.live(scheduler_id):
            record = record_from_task(live.task, tries=live.tries, rev=live.rev)
            if await queues.restore(record):
                result.restored += 1
            else:
                result.present += 1
    if result.restored:
        log.warning("reconciliation restored %d live tasks that Redis had lost", result.restored)
    return result
