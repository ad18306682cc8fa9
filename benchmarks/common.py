"""What every benchmark shares: the result rows, progress output, percentiles, bounded loops
and the OpenKAT-shaped workload (boefje tasks as the runners see them, the runners' filter).
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from redisched.models import mmh3_hex
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout, QueueOptions
from redisched.queue.records import TaskRecord, priority_key

_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the run started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    bench: str
    metric: str
    value: float | None
    unit: str
    target: str = ""  # e.g. "<= 1.3", ">= 25000"
    status: str = ""  # "met", "MISSED", "" (no target), "skipped", "error"
    note: str = ""


@dataclass
class Context:
    quick: bool
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    bench: str = ""

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def row(self, metric: str, value: float | None, unit: str, target: str = "", note: str = "") -> Row:
        row = Row(self.bench, metric, value, unit, target, _judge(value, target), note)
        self.rows.append(row)
        if target:
            progress(f"{self.bench}: {metric} = {fmt(value)} {unit} (target {target}: {row.status})")
        else:
            progress(f"{self.bench}: {metric} = {fmt(value)} {unit}")
        return row

    def skip(self, metric: str, why: str) -> None:
        self.rows.append(Row(self.bench, metric, None, "", "", "skipped", why))
        progress(f"{self.bench}: {metric} skipped: {why}")

    def note(self, text: str) -> None:
        self.notes.append(f"{self.bench}: {text}")
        progress(f"{self.bench}: note: {text}")

    def detail(self, key: str, value: Any) -> None:
        self.details.setdefault(self.bench, {})[key] = value


def _judge(value: float | None, target: str) -> str:
    if not target or value is None:
        return ""
    op, _, number = target.partition(" ")
    bound = float(number.replace(",", ""))
    ok = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]
    return "met" if ok else "MISSED"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


# --- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    """p50/p90/p99/max in µs of a list of durations in ns."""
    values = sorted(s / 1000 for s in samples_ns)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": values[-1] if values else float("nan"),
    }


def median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    if n == 0:
        return float("nan")
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


class Bounded:
    """A loop bound in count and in time: ``for i in Bounded(n, seconds): ...``."""

    def __init__(self, count: int, seconds: float) -> None:
        self.count, self.seconds = count, seconds
        self.done = 0
        self.timed_out = False

    def __iter__(self) -> Iterator[int]:
        deadline = time.monotonic() + self.seconds
        for i in range(self.count):
            if (i & 63) == 0 and time.monotonic() > deadline:
                self.timed_out = True
                return
            self.done = i + 1
            yield i


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load], "python": sys.version.split()[0]}


# --- the workload ----------------------------------------------------------------------------
#
# 20 boefjes over 4 OCI images, 10 organisations, random priorities. The runner has the
# images 0 and 1 and enabled 8 of the 10 boefjes that use them (RUNNER_FILTER): its pop merges
# 8 index ranges, and every candidate it meets matches. MISMATCHED_FILTER adds 2 plugins whose
# image the runner lacks: their tasks match the driving index but not the image filter, so
# they pile up ahead of the poppable ones and every pop passes over them again.

BOEFJES = [f"boefje-{i:02d}" for i in range(20)]
IMAGES = [f"ghcr.io/minvws/openkat/plugin-{i}:latest" for i in range(4)]
ORGS = [f"org{i}" for i in range(10)]


def image_of(boefje_index: int) -> str:
    return IMAGES[boefje_index % 4]


def runner_filter(plugins: list[str], images: list[str]) -> dict[str, Any]:
    """The filter body OpenKAT's boefje runner sends (boefjes/clients/scheduler_client.py)."""
    return {
        "filters": [
            {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": images},
            {"column": "data", "field": "boefje__id", "operator": "in", "value": plugins},
        ]
    }


RUNNER_IMAGES = [IMAGES[0], IMAGES[1]]
RUNNER_PLUGINS = [b for i, b in enumerate(BOEFJES) if i % 4 in (0, 1)][:8]
RUNNER_FILTER = runner_filter(RUNNER_PLUGINS, RUNNER_IMAGES)
MISMATCHED_FILTER = runner_filter(RUNNER_PLUGINS + [BOEFJES[2], BOEFJES[3]], RUNNER_IMAGES)
# Boefje indexes a runner pop can take (plugin enabled and image supported).
RUNNER_POPPABLE = [i for i, b in enumerate(BOEFJES) if b in RUNNER_PLUGINS and image_of(i) in RUNNER_IMAGES]


def poppable_numbers(count: int, start_block: int = 0) -> Iterator[int]:
    """Task numbers whose tasks the runner's filter takes (see fill_boefje's ``numbers``)."""
    per = len(RUNNER_POPPABLE)
    return ((start_block + k // per) * len(BOEFJES) + RUNNER_POPPABLE[k % per] for k in range(count))


def boefje_data(n: int, *, rng: random.Random | None = None) -> tuple[dict[str, Any], str, int]:
    """(data, organisation, priority) of the n-th boefje task of the workload."""
    b = n % len(BOEFJES)
    org = ORGS[(n // 20) % len(ORGS)]
    data = {
        "boefje": {"id": BOEFJES[b], "name": BOEFJES[b], "version": None, "oci_image": image_of(b)},
        "input_ooi": f"Hostname|internet|h{n}.example.com",
        "organization": org,
    }
    priority = (rng or random).randint(1, 1_000_000)
    return data, org, priority


def normalizer_data(n: int) -> dict[str, Any]:
    return {
        "normalizer": {"id": "kat_nmap_normalize", "version": None},
        "raw_data": {
            "id": str(uuid.uuid4()),
            "boefje_meta": {
                "id": str(uuid.uuid4()),
                "boefje": {"id": "nmap", "version": None},
                "input_ooi": f"IPAddressV4|internet|10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                "arguments": {},
                "organization": ORGS[n % len(ORGS)],
                "started_at": None,
                "ended_at": None,
            },
            "mime_types": [{"value": "boefje/nmap"}],
        },
    }


_encode = msgspec.json.Encoder().encode


def fast_boefje_push_args(n: int, rng: random.Random, options: QueueOptions | None = None) -> list[Any]:
    """The push script's ARGV for the n-th workload task, built without the payload
    validation of ``QueueCommands.push`` (which costs ~40 µs a task): the same bytes, ~8x
    cheaper, for filling queues with a million tasks. ``check_fast_fill`` proves it equal (but
    for the ids and the limit rules' version, left out)."""
    b = n % len(BOEFJES)
    org = ORGS[(n // 20) % len(ORGS)]
    task_id = str(uuid.uuid4())
    ooi = f"Hostname|internet|h{n}.example.com"
    boefje, image = BOEFJES[b], image_of(b)
    data = (  # as sent: a push whose id is data.id stores data as it came (mula's rule)
        f'{{"boefje":{{"id":"{boefje}","name":"{boefje}","version":null,'
        f'"oci_image":"{image}"}},"input_ooi":"{ooi}","organization":"{org}","id":"{task_id}"}}'
    )
    priority = rng.randint(1, 1_000_000)
    record = TaskRecord(
        id=task_id,
        scheduler_id="boefje",
        organisation=org,
        priority=str(priority),
        status="queued",
        type="boefje",
        hash=mmh3_hex(f"{ooi}-{boefje}-{org}"),
        created_at="0",
        modified_at="0",
        pk=priority_key(priority),
        ix={"org": org, "boefje": boefje, "image": image},
    )
    options = options or QueueOptions()
    return [_encode(record), data.encode(), options.maxsize, options.twin_policy, "1", str(uuid.uuid4()), "0", "1", "", "", "", ""]


def check_fast_fill() -> None:
    """The fast filler's ARGV equal QueueCommands.push's but for the random ids."""
    rng = random.Random(7)
    fast = fast_boefje_push_args(5, rng)
    data, org, _ = boefje_data(5)
    record = msgspec.json.decode(fast[0], type=TaskRecord)
    data["id"] = record.id
    call = QueueCommands(QueueLayout()).push("boefje", organisation=org, data=data, priority=int(record.priority), task_id=record.id)
    same = [bytes(a) if isinstance(a, (bytes, bytearray)) else a for a in call.args[:5]] == fast[:5]
    # ARGV[9], the rules version: "" (none) rather than the process's own, which an API started
    # later would find stale: the workload has no limited boefjes
    if not same or len(call.args) != len(fast) or call.args[6:8] + call.args[9:] != fast[6:8] + fast[9:]:
        raise AssertionError(f"fast fill differs from QueueCommands.push:\n{call.args}\n{fast}")


def fill_boefje(redis_client: Any, commands: QueueCommands, count: int, *, start: int = 0, batch: int = 2000,
                seed: int = 1, drop_events: bool = True, label: str = "", seconds: float = 600,
                numbers: Iterator[int] | None = None) -> int:
    """Push ``count`` workload tasks onto the boefje queue with pipelined FCALL of the push
    function, runs of up to PUSHES_PER_RUN pushes each (the events stream is dropped after each
    batch unless asked: nothing reads it here, and at a million tasks it would double Redis'
    memory). Task numbers run from ``start`` unless ``numbers`` gives them. Returns how many
    were pushed."""
    from redisched.queue.commands import PUSHES_PER_RUN
    from redisched.queue.scripts import library, load

    script = load("push")
    redis_client.execute_command(*library().load_command())
    keys = commands.keys("boefje")
    rng = random.Random(seed + start)
    numbers = iter(numbers) if numbers is not None else iter(range(start, start + count))
    pushed, deadline, last_report = 0, time.monotonic() + seconds, time.monotonic()
    while pushed < count and time.monotonic() < deadline:
        pipe = redis_client.pipeline(transaction=False)
        size = min(batch, count - pushed)
        argvs = [fast_boefje_push_args(n, rng) for n in itertools.islice(numbers, size)]
        runs = [argvs[at:at + PUSHES_PER_RUN] for at in range(0, len(argvs), PUSHES_PER_RUN)]
        for run in runs:
            pipe.execute_command(*script.fcall(keys.all, [arg for argv in run for arg in argv]))
        if drop_events:
            pipe.delete(keys.events)
        replies = pipe.execute()
        bad = [r for reply in replies[:len(runs)] for r in reply if isinstance(r, int)]
        if bad:
            raise RuntimeError(f"push refused during fill: codes {set(bad)}")
        pushed += size
        if time.monotonic() - last_report > 3:
            last_report = time.monotonic()
            progress(f"{label}filled {pushed:,}/{count:,}")
    return pushed
