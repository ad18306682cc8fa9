"""Every Redis key redisched uses, in one place.

All keys of one queue share the hash tag ``{<queue>}`` so each script touches one Cluster
slot; a script is always handed the full ``QueueKeys.all`` list, in this order, so key
positions are fixed and every key it touches is declared in KEYS.

A queue may be spread over N partitions (``QueueLayout``, layout.py): N full sets of these keys, each
under its own hash tag, so each can live on its own Cluster shard. A task's partition is
picked by its dedup hash, so deduplication stays one atomic script. With N = 1 the tag is
the queue's name; partition i of N > 1 gets the tag ``<queue>.<i>.<j>``, with the smallest j
whose slot falls in the i-th of N equal slot ranges (so a cluster with N masters splitting
the slots evenly, as ``redis-cli --cluster create`` does, holds one partition per master).

    <p>:{<q>}:queue      ZSET, all scores 0, member = order key: queued tasks, best first
    <p>:{<q>}:tasks      HASH task id -> task record (JSON, see records.py)
    <p>:{<q>}:data       HASH task id -> the task's data (JSON, as the API returns it)
    <p>:{<q>}:hashes     HASH dedup hash -> id of the task queued with it
    <p>:{<q>}:leases     ZSET task id scored by lease expiry (ms): dispatched/running tasks
    <p>:{<q>}:events     STREAM one entry per change, read by the snapshotter
    <p>:{<q>}:meta       HASH last_activity (µs), counters (rev, quarantined, stray_members)
                         and migrations' states (pairs, orders, fair)
    <p>:{<q>}:schedules  HASH dedup hash -> "<schedule id>|<1 enabled, 0 disabled>" (mirror)
    <p>:{<q>}:ix:<name>  ZSET lex index, member = "<value>\\0<order key>" (organisation,
                         boefje id, oci image, dedup key)
    <p>:{<q>}:dedupq     ZSET like queue, only tasks with a deduplication_key
    <p>:{<q>}:pairs      ZSET lex, member = "<pair>\\0<order key>" per queued task with a
                         boefje id, pair = "<#id>:<id>[=<oci image>]": the (boefje id, image)
                         index the runners' filter reads (common.lua, pair_name)
    <p>:{<q>}:heads      HASH pair -> order key of its best queued task (common.lua)
    <p>:{<q>}:quarantine HASH task id -> {"reason", "record", "data"}: a record a script met
                         that does not decode (or its data), moved aside so the queue goes on
    <p>:{<q>}:events:dead  STREAM events Postgres refused, quarantined by the snapshotter
                         (history/quarantine.py); no script touches it
    <p>:{<q>}:events:dead:tasks  SET ids of the tasks with events in events:dead (their
                         later events join them there)
    <p>:{<q>}:trace:<id> STRING, with tracing on only: the span context of the task's push,
                         waiting for its pop to link to it (telemetry.py; a day's TTL)
    <p>:{<q>}:rates      HASH "<op>:<slot>" -> "<bucket>:<count>": tasks pushed, popped and
                         failed per 10-second bucket, a ring of RATE_SLOTS buckets (the
                         dashboard's rates; common.lua count_bucket)

Outside the queues, for the schedulers:

    <p>:{<q>}:limq       ZSET lex, member = "<group>\\0<order key>": queued tasks of limited
                         groups (REDISCHED_LIMITS); only each group's head is on the queue
    <p>:{<q>}:limits     HASH "<group>\\0rule|n|last": a group's rule key, leased tasks, and
                         the ms its latest task left; "\\0rule\\0<rule key>" each rule's spec,
                         "\\0version"/"\\0rules" the rules followed (common.lua, rules.lua)
    <p>:{<q>}:limwake    ZSET group scored by the ms it may have room again
    <p>:{<q>}:limobj     ZSET lex, member = "<organisation>\\0<input_ooi>\\0<task id>": queued
                         tasks of limited groups by object, so the cancel on an object's
                         deletion reaches those waiting past their group's head
    <p>:{<q>}:limgroups  ZSET group scored by the ms of its latest push: the groups the
                         dashboard lists, the LIMIT_GROUPS_KEPT latest (push.lua trims it)

Fair pop across organisations (REDISCHED_FAIRNESS=organisation, lua/includes/fair_index.lua).
A *range* is where a pop's search is driven from: "q" the queue, "d" the dedup queue,
"b:<boefje id>" and "i:<oci image>" the slices of those indexes.

    <p>:{<q>}:fair:tasks   ZSET lex, member = "<range>\0<organisation>\0<order key>": each
                           range's queued tasks by organisation, so one organisation's best
                           task in a range is one ZRANGE (for "q", ix:org is that already)
    <p>:{<q>}:fair:orgs    ZSET lex, member = "<range>\0<vt key>\0<organisation>": the
                           organisations with tasks in each range, by virtual time
    <p>:{<q>}:fair:vt      HASH "<organisation>" -> its virtual time (tasks served / weight);
                           "<range>\0<organisation>" -> the vt key it is listed under there;
                           "\0" -> the system virtual time
    <p>:{<q>}:fair:weights HASH organisation -> weight (absent: 1)
    <p>:{<q>}:fair:served  HASH organisation -> tasks handed out with fairness on
    (meta "fair" = "ready": every queued task is in them; lua/index_fair.lua)

    <p>:layout                        STRING, how many partitions the queues were made with
    <p>:limits:rules                  STRING, the limit rules in force, their version and source
                                      (JSON, limit_rules.RuleSet; plans.replace_limits)
    <p>:scheduler:boefjes-seen:<org>  SET of boefje ids already swept for that organisation
    <p>:scheduler:handling:<sha1>     STRING, set while a message with that body is handled

For the dashboard:

    <p>:api:seen                      ZSET API process ("<host>:<pid>") scored by when it last
                                      said it is alive (ms); each API process refreshes its own

Order key (35 bytes, records.py order_key; lua/includes/common.lua, order_of) = the 20-digit
priority key (priority + 2^63) ++ the 18 digits of created_at + 10^17 (µs since the epoch:
years 1 to 9999), both as base-100 digits (a byte 0..99 per two decimal digits: 10 + 9 bytes)
++ the task id's 16 bytes: byte order is (priority, created_at, id) order for any signed
64-bit priority and any datetime the API accepts, so ZSET lex order is queue order. Members
hold NUL and any other byte; a "<value>\0<order key>" member is cut at its first NUL (index
values hold none). Its first byte is below "0". An earlier version wrote the text form,
72 to 75 bytes from "0" on: 20-digit priority key ++ created_at as records.py order_time
holds it ++ the id as text; the service's start moves those to packed ones in bounded
steps (lua/index_orders.lua; meta "orders" = "packed" once done, "orders_cursor" meanwhile),
every script reading and taking off both forms until then.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from redisched.queue.indexes import INDEXES

# The rates ring (common.lua count_bucket): 10-second buckets, 30 minutes of them; a slot
# holds bucket * RATE_COUNT_SPAN + its count (exact in Lua's doubles until the year 2255).
RATE_BUCKET_SECONDS = 10
RATE_SLOTS = 180
RATE_COUNT_SPAN = 10_000_000
RATE_OPS = ("push", "pop", "fail")
# The limit groups a queue partition remembers for the dashboard (limgroups), latest pushed first.
LIMIT_GROUPS_KEPT = 1000
# The most driving ranges (a runner's pairs, boefje ids) a pop is chosen fairly over: the
# choice reads each one's listing (~4 µs a range; lua/includes/fair.lua). A pop over more is
# served by the plain search, in queue order.
FAIR_SLICES_MAX = 512

KEY_NAMES = (
    ("queue", "tasks", "data", "hashes", "leases", "events", "meta", "schedules", "dedupq", "rates", "quarantine")
    + ("pairs", "heads")
    + ("limq", "limits", "limwake", "limgroups", "limobj")
    + tuple(f"ix:{name}" for name in INDEXES)
)
# Handed to the scripts (last, after KEY_NAMES) only with fairness on: a script knows
# fairness is off by their absence (K_FAIR_TASKS nil), so `none` costs no command at all.
FAIR_KEY_NAMES = ("fair:tasks", "fair:orgs", "fair:vt", "fair:weights", "fair:served")


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one queue, or of one partition of it."""

    prefix: str
    queue_id: str
    partition: int = 0
    partitions: int = 1
    fair: bool = False  # REDISCHED_FAIRNESS=organisation: the scripts get FAIR_KEY_NAMES too
    all: list[str] = field(init=False)

    def __post_init__(self) -> None:
        names = KEY_NAMES + FAIR_KEY_NAMES if self.fair else KEY_NAMES
        object.__setattr__(self, "all", [self.key(name) for name in names])

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{{partition_tag(self.queue_id, self.partition, self.partitions)}}}"

    def key(self, name: str) -> str:
        return f"{self.tag}:{name}"

    def __getattr__(self, name: str) -> str:  # keys.tasks, keys.events, ...
        if name in KEY_NAMES:
            return self.key(name)
        raise AttributeError(name)

    def fair_key(self, name: str) -> str:
        """``keys.fair_key("vt")``: a key of the fair pop (FAIR_KEY_NAMES), fairness on or off."""
        return self.key(f"fair:{name}")

    @property
    def dead_events(self) -> str:
        return self.key("events:dead")

    @property
    def dead_tasks(self) -> str:
        return self.key("events:dead:tasks")

    def index(self, name: str) -> str:
        return self.key(f"ix:{name}")


@cache
def partition_tag(queue_id: str, partition: int, partitions: int) -> str:
    if partitions == 1:
        return queue_id
    low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    j = 0
    while not low <= key_slot(f"{queue_id}.{partition}.{j}".encode()) < high:
        j += 1
    return f"{queue_id}.{partition}.{j}"


def partition_of(task_hash: str | None, partitions: int) -> int:
    """The partition of a task: by its dedup hash, so twins always meet in one script."""
    if partitions == 1 or not task_hash:
        return 0
    return zlib.crc32(task_hash.encode()) % partitions


@cache
def partition_keys(prefix: str, queue_id: str, partitions: int, fair: bool = False) -> list[QueueKeys]:
    """The keys of each partition of a queue (queue/layout.py hands them out)."""
    return [QueueKeys(prefix, queue_id, i, partitions, fair) for i in range(partitions)]


def layout_key(prefix: str) -> str:
    return f"{prefix}:layout"


def limit_rules_key(prefix: str) -> str:
    return f"{prefix}:limits:rules"


def boefjes_seen_key(prefix: str, organisation: str) -> str:
    return f"{prefix}:scheduler:boefjes-seen:{organisation}"


def handling_key(prefix: str, body_digest: str) -> str:
    return f"{prefix}:scheduler:handling:{body_digest}"


def api_seen_key(prefix: str) -> str:
    return f"{prefix}:api:seen"


def trace_key(queue_key: str, task_id: str) -> str:
    """Beside a task's queue partition (``queue_key`` is its ``queue`` key): its push's span."""
    return f"{queue_key.rsplit(':', 1)[0]}:trace:{task_id}"
