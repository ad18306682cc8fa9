"""The audit every fault scenario ends with.

Audit, the same for every scenario (``audit``): once the load has stopped, the reaper is
stopped and the snapshotter has drained, every task a client was told was pushed is either
finished exactly once (one confirmed completion, Postgres says completed, Redis dropped it) or
still live (queued/dispatched/running) with Postgres holding the very same version (status and
rev) as Redis. Redelivery after a lease expiry (a task popped more than once) is at-least-once
and counted on its own; two confirmed completions of one task are a duplicate.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from redisched.models import SCHEDULERS
from redisched.queue.records import decode_record
from tests.faults.background import Background
from tests.faults.common import FINISHED, LIVE, layout, log
from tests.faults.load import Ledger


@dataclass
class Audit:
    name: str
    pushed: int = 0
    live: int = 0
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    redelivered: int = 0  # extra pops: handed out again after a lease expiry
    disagree: list[str] = field(default_factory=list)  # Postgres and Redis differ
    # live again in Redis with an older version, while Postgres has it finished: it will run again
    resurrected: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # Postgres rows no client pushed
    finished_left_in_redis: int = 0
    uncertain_pushes: int = 0
    uncertain_in: int = 0
    drained: bool = False
    # limit groups (FAIR_LIMITED): a live task out of its group, a count that is not its
    # group's leased tasks, a group over its cap
    limits_disagree: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, load_ops: int, during_fault: int, faults: int) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"[faults] {self.name}: load ops={load_ops} during-fault={during_fault} faults={faults} "
            f"pushed={self.pushed} finished={self.finished} live={self.live} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} redelivered={self.redelivered} "
            f"uncertain-pushes={self.uncertain_pushes} (in={self.uncertain_in}) "
            f"resurrected={len(self.resurrected)} pg-disagrees={len(self.disagree)} drained={self.drained} {extra}".rstrip()
        )

    def check(self) -> None:
        assert self.drained, f"{self.name}: the snapshotter did not drain"
        assert not self.lost, f"{self.name}: {len(self.lost)} tasks lost, e.g. {self.lost[:5]}"
        assert not self.duplicated, f"{self.name}: {len(self.duplicated)} tasks completed twice, e.g. {self.duplicated[:5]}"
        assert not self.resurrected, f"{self.name}: finished tasks back in the queue: {self.resurrected[:3]}"
        assert not self.disagree, f"{self.name}: Postgres disagrees with Redis: {self.disagree[:5]}"
        assert not self.unexplained, f"{self.name}: Postgres holds tasks nobody pushed: {self.unexplained[:5]}"
        assert self.finished_left_in_redis == 0, f"{self.name}: finished tasks left in Redis"
        assert not self.limits_disagree, f"{self.name}: limit groups disagree with their tasks: {self.limits_disagree[:5]}"


def audit(name: str, ledger: Ledger, background: Background, redis_url: str, dsn: str, prefix: str) -> Audit:
    """Stop reaping, let the snapshotter drain, then compare the ledger, Redis and Postgres
    (and, with limit rules in force, each group's count with its tasks)."""
    result = Audit(name)
    background.stop_reaper()
    result.drained = background.drained(timeout=30)
    in_redis: dict[str, Any] = {}
    client = redis.Redis.from_url(redis_url)
    try:
        for scheduler_id in SCHEDULERS:
            for task_id, raw in client.hgetall(layout(prefix).of(scheduler_id)[0].tasks).items():
                record = decode_record(raw, task_id=task_id.decode(), queue_id=scheduler_id)
                in_redis[record.id] = record
        if background.queues.layout.limits:
            result.limits_disagree = limit_groups_disagree(client, prefix, in_redis.values())
    finally:
        client.close()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id::text, status, rev FROM tasks").fetchall()
    in_pg = {task_id: (status, str(rev)) for task_id, status, rev in rows}

    result.pushed = len(ledger.pushed)
    result.uncertain_pushes = len(ledger.push_uncertain)
    for task_id in list(ledger.pushed) + list(ledger.push_uncertain):
        acked = task_id in ledger.pushed
        record, stored = in_redis.get(task_id), in_pg.get(task_id)
        if record is None and stored is None:
            if acked:
                result.lost.append(task_id)
            continue
        if not acked:
            result.uncertain_in += 1
        if record is not None and record.status in LIVE:
            result.live += 1
            if stored is not None and stored[0] in FINISHED and int(stored[1]) > int(record.rev):
                result.resurrected.append(f"{task_id}: redis {record.status}/{record.rev} postgres {stored}")
            elif stored is None or stored != (record.status, record.rev):
                result.disagree.append(f"{task_id}: redis {record.status}/{record.rev} postgres {stored}")
            continue
        if record is not None:
            result.finished_left_in_redis += 1
        status = record.status if record is not None else stored[0]
        if status != "completed":
            result.disagree.append(f"{task_id}: finished as {status}, only completions were sent")
        elif stored is None or stored[0] != "completed":
            result.disagree.append(f"{task_id}: completed in Redis, Postgres has {stored}")
        elif not ledger.completed[task_id] and task_id not in ledger.complete_uncertain:
            result.disagree.append(f"{task_id}: completed, but no runner was told so")
        result.finished += 1
    known = set(ledger.pushed) | ledger.push_uncertain
    result.unexplained = [task_id for task_id in in_pg if task_id not in known]
    result.duplicated = [task_id for task_id, n in ledger.completed.items() if n > 1]
    result.redelivered = sum(n - 1 for n in ledger.pops.values() if n > 1)
    return result


def limit_groups_disagree(client: redis.Redis, prefix: str, records) -> list[str]:
    """FAIR_LIMITED's rules put every boefje task in a group: each live one must be in it
    (a queued one waiting in limq), each group's count (``<g>\0n``) must be its tasks
    counted against it (lc), and never above the cap of 2 (org groups)."""
    keys = layout(prefix).of("boefje")[0]
    limits = {k.decode(): v.decode() for k, v in client.hgetall(keys.limits).items()}
    waiting = set(client.zrange(keys.limq, 0, -1))
    found, counted = [], collections.Counter()
    for record in records:
        if record.scheduler_id != "boefje" or record.status not in LIVE:
            continue
        if record.lg is None:
            found.append(f"{record.id}: {record.status}, in no group")
        elif record.status == "queued" and record.lg.encode() + b"\0" + record.order not in waiting:
            found.append(f"{record.id}: queued, not waiting in its group {record.lg}")
        elif record.status != "queued":
            counted[record.lg] += record.lc
    groups = set(counted) | {field[: -len("\0n")] for field in limits if field.endswith("\0n") and field[0] != "\0"}
    for group in groups:
        n = int(limits.get(f"{group}\0n", "0"))
        if n != counted[group] or (group.startswith("org:") and n > 2):
            found.append(f"group {group}: count {n}, {counted[group]} of its tasks leased")
    return found


def report(result: Audit, ledger: Ledger, fault_start: float, fault_end: float, faults: int) -> None:
    during = ledger.ops_between(fault_start, fault_end)
    log(result.line(len(ledger.ops), during, faults))
    if ledger.errors:
        log(f"[faults] {result.name}: client errors {dict(ledger.errors)}")
    if ledger.http_status:
        log(f"[faults] {result.name}: http answers {dict(sorted(ledger.http_status.items()))}")


def run_in_thread(function: Callable[[], Any]) -> concurrent.futures.Future:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future
