"""What the fault scenarios share: the statuses, the errors a Redis outage raises, a log line,
the queue layout (short leases, many tries) and a payload of its own per task."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import redis

from redisched.queue.layout import QueueLayout


ROOT = Path(__file__).resolve().parents[2]
LIVE = ("queued", "dispatched", "running")
FINISHED = ("completed", "failed", "cancelled")
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionError, OSError)
_seq = itertools.count()


def log(message: str) -> None:
    print(message, flush=True)


def layout(prefix: str, *, lease_ms: int = 2000) -> QueueLayout:
    """Short dispatch leases (redelivery within seconds) and tries enough that no task of a
    scenario is failed by the reaper: the audit expects completed or live."""
    return QueueLayout(prefix=prefix, dispatch_lease_ms=lease_ms, running_lease_ms=lease_ms, max_tries=1000)


def task_data(task_id: str, organisation: str = "org1") -> dict[str, Any]:
    """A boefje payload of its own id (task id == data.id) and a hash no other task shares."""
    return {
        "id": task_id,
        "boefje": {"id": "dns-records", "name": "dns-records", "version": None, "oci_image": None},
        "input_ooi": f"Hostname|internet|f{next(_seq)}-{task_id[:8]}.example",
        "organization": organisation,
    }
