"""What the fault scenarios share: the statuses, the errors a Redis outage raises, a log line,
the queue layout (short leases, many tries) and a payload of its own per task."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import redis

from redisched.limit_rules import parse_rules
from redisched.queue.layout import QueueLayout


ROOT = Path(__file__).resolve().parents[2]
LIVE = ("queued", "dispatched", "running")
FINISHED = ("completed", "failed", "cancelled")
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionError, OSError)
_seq = itertools.count()


def log(message: str) -> None:
    print(message, flush=True)


def layout(prefix: str, *, lease_ms: int = 2000, **features: Any) -> QueueLayout:
    """Short dispatch leases (redelivery within seconds) and tries enough that no task of a
    scenario is failed by the reaper: the audit expects completed or live. ``features``:
    more of QueueLayout (fairness, limits: FAIR_LIMITED)."""
    return QueueLayout(prefix=prefix, dispatch_lease_ms=lease_ms, running_lease_ms=lease_ms, max_tries=1000, **features)


# Fairness on and limit rules of both kinds: every boefje task in a group (shodan's shared
# cooldown, every other boefje's concurrency per organisation); the load pushes for 3
# organisations, one task in 4 shodan's (ORGANISATIONS, task_data).
FAIR_LIMITED: dict[str, Any] = {
    "fairness": "organisation",
    "limits": parse_rules([
        {"boefje": "shodan", "group": "shodan", "cooldown": 0.01},
        {"boefje": "*", "group": "org:{organisation}", "concurrency": 2},
    ]),
}  # fmt: skip


def task_data(task_id: str, organisation: str = "org1", boefje_id: str = "dns-records") -> dict[str, Any]:
    """A boefje payload of its own id (task id == data.id) and a hash no other task shares."""
    return {
        "id": task_id,
        "boefje": {"id": boefje_id, "name": boefje_id, "version": None, "oci_image": None},
        "input_ooi": f"Hostname|internet|f{next(_seq)}-{task_id[:8]}.example",
        "organization": organisation,
    }
