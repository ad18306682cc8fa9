"""Every Redis key redisched uses, in one place.

All keys of one queue share the hash tag ``{<queue>}`` so each script touches one Cluster
slot; a script is always handed the full ``QueueKeys.all`` list, in this order, so key
positions are fixed and every key it touches is declared in KEYS.

    <p>:{<q>}:queue      ZSET, all scores 0, member = order key: queued tasks, best first
    <p>:{<q>}:tasks      HASH task id -> task record (JSON, see records.py)
    <p>:{<q>}:data       HASH task id -> the task's data (JSON, as the API returns it)
    <p>:{<q>}:hashes     HASH dedup hash -> id of the task queued with it
    <p>:{<q>}:leases     ZSET task id scored by lease expiry (ms): dispatched/running tasks
    <p>:{<q>}:events     STREAM one entry per change, read by the snapshotter
    <p>:{<q>}:meta       HASH last_activity (µs) and counters
    <p>:{<q>}:schedules  HASH dedup hash -> "<schedule id>|<1 enabled, 0 disabled>" (mirror)
    <p>:{<q>}:ix:<name>  ZSET lex index, member = "<value>\\0<order key>" (organisation,
                         boefje id, oci image, dedup key)
    <p>:{<q>}:dedupq     ZSET like queue, only tasks with a deduplication_key

Outside the queues, for the schedulers:

    <p>:scheduler:boefjes-seen:<org>  SET of boefje ids already swept for that organisation
    <p>:scheduler:handling:<sha1>     STRING, set while a message with that body is handled

Order key = 20-digit (priority + 2^63) ++ 16-digit created_at µs ++ task id: byte order is
(priority, created_at) order for any signed 64-bit priority, so ZSET lex order is queue order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Secondary indexes: name -> (column, data path). The pop planner drives a pop from one of
# them when the filter has an eq/in on that column/path.
INDEXES: dict[str, tuple[str, str | None]] = {
    "org": ("organisation", None),
    "boefje": ("data", "boefje__id"),
    "image": ("data", "boefje__oci_image"),
    "dedup": ("data", "deduplication_key"),
}

KEY_NAMES = ("queue", "tasks", "data", "hashes", "leases", "events", "meta", "schedules", "dedupq") + tuple(
    f"ix:{name}" for name in INDEXES
)


@dataclass(frozen=True)
class QueueKeys:
    prefix: str
    queue_id: str
    all: list[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "all", [self.key(name) for name in KEY_NAMES])

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{{self.queue_id}}}"

    def key(self, name: str) -> str:
        return f"{self.tag}:{name}"

    def __getattr__(self, name: str) -> str:  # keys.tasks, keys.events, ...
        if name in KEY_NAMES:
            return self.key(name)
        raise AttributeError(name)

    def index(self, name: str) -> str:
        return self.key(f"ix:{name}")


def boefjes_seen_key(prefix: str, organisation: str) -> str:
    return f"{prefix}:scheduler:boefjes-seen:{organisation}"


def handling_key(prefix: str, body_digest: str) -> str:
    return f"{prefix}:scheduler:handling:{body_digest}"
