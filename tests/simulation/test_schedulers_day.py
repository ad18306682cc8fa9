"""A day of OpenKAT in accelerated time, hour by hour, with two scheduler workers side by side.

The world (Katalogus, Octopoes, Bytes) is served over HTTP on 127.0.0.1; events go through
the real RabbitMQ; tasks land in the real Redis and, through the snapshotter, in Postgres.
Every hour: the world changes and publishes its events, both workers run their periodic
rounds at once, then fake runners take every queued task, record the boefje run in Bytes,
publish its raw file, and finish the normalizer and report tasks. The clock is injected
(the schedulers' and the snapshotter's), so a day takes seconds.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from datetime import timedelta

import msgspec
import pytest

from redisched.clients.http import ServiceClients
from redisched.config import Settings
from redisched.history import snapshotter as snapshotter_module
from redisched.history.snapshotter import Snapshotter, wait_caught_up
from redisched.models import ScheduleCreate
from redisched.queue.queue import TaskQueues
from redisched.schedulers.runner import SchedulerRunner, build_schedulers
from tests.conftest import AMQP_URL
from tests.integration.conftest import make_layout
from tests.simulation.fakes import T0, Clock
from tests.simulation.harness import Broker, fresh_database, history_on, serving, unique_queue
from tests.simulation.world import World, boefje, bytes_app, katalogus_app, normalizer, octopoes_app

pytestmark = pytest.mark.timeout(60)

A, B, C, D, E = (f"Hostname|internet|{name}.example" for name in "abcde")
IP = "IPAddressV4|internet|10.0.0.1"


def build_world() -> World:
    world = World()
    for org in ("org1", "org2"):
        world.add_plugin(org, boefje("dns-records", scan_level=1))
        world.add_plugin(org, normalizer("kat_dns_normalize", ["boefje/dns-records"]))
    world.add_plugin("org1", boefje("nmap", consumes=["IPAddressV4"], scan_level=2, interval=360))
    world.add_plugin("org1", normalizer("kat_nmap_normalize", ["boefje/nmap"]))
    world.add_plugin("org1", boefje("on-create", run_on=["create"], scan_level=1))
    world.add_plugin("org1", boefje("late", scan_level=0, enabled=False))
    world.add_plugin("org2", boefje("off", scan_level=0, enabled=False))
    world.add_plugin("org3", boefje("whois", scan_level=1, cron="0 */8 * * *", interval=60))
    world.duplicates["dns-records"] = {"org1", "org2"}
    return world


def mutation(org: str, pk: str, level: int | None, operation: str = "create") -> dict:
    value = None
    if level is not None:
        value = {"primary_key": pk, "object_type": pk.split("|")[0], "scan_profile": {"level": level}}
    return {"operation": operation, "primary_key": pk, "value": value, "client_id": org}


def events_at(hour: int, world: World) -> list[dict]:
    """What happens in the world at this hour, and the mutations Octopoes publishes for it."""
    if hour == 0:
        for org, pk, level in [("org1", A, 1), ("org1", B, 0), ("org1", IP, 2), ("org2", A, 1), ("org3", C, 1)]:
            world.add_object(org, pk, level)
        return [mutation("org1", A, 1), mutation("org1", B, 0), mutation("org1", IP, 2), mutation("org2", A, 1),
                mutation("org3", C, 1)]  # fmt: skip
    if hour in (1, 18):
        return [mutation("org1" if hour == 1 else "org2", A, 1, "update")]  # within the grace period
    if hour in (3, 6):
        return [mutation("org1", IP, 2, "update")]  # nmap's 6 h interval: too early at 3, due at 6
    if hour == 10:
        world.set_enabled("org1", "late", True)  # a new boefje: the sweep covers a and b
    if hour == 14:
        world.add_object("org1", D, 1)
        return [mutation("org1", B, None, "delete"), mutation("org1", D, 1)]
    if hour == 15:
        del world.objects["org3"][C]  # whois' schedule is disabled when it comes due at 16
    if hour == 20:
        world.add_object("org2", E, 1)  # no event in org2: only the dedup twin of org1's task
        world.add_object("org1", E, 1)
        return [mutation("org1", E, 1)]
    return []


# (hour, scheduler, organisation, plugin or recipe, object) of every task the day must create
EXPECTED = {
    (0, "boefje", "org1", "dns-records", A), (0, "boefje", "org2", "dns-records", A),
    (0, "boefje", "org1", "on-create", A), (0, "boefje", "org1", "nmap", IP), (0, "boefje", "org3", "whois", C),
    (0, "normalizer", "org1", "kat_dns_normalize", A), (0, "normalizer", "org2", "kat_dns_normalize", A),
    (0, "normalizer", "org1", "kat_nmap_normalize", IP),
    (6, "report", "org1", "daily", None),
    (6, "boefje", "org1", "nmap", IP), (6, "normalizer", "org1", "kat_nmap_normalize", IP),
    (8, "boefje", "org3", "whois", C),  # rescheduled by cron
    (10, "boefje", "org1", "late", A), (10, "boefje", "org1", "late", B),
    (12, "report", "org1", "once", None),
    (14, "boefje", "org1", "dns-records", D), (14, "boefje", "org1", "on-create", D),
    (14, "boefje", "org1", "late", D), (14, "normalizer", "org1", "kat_dns_normalize", D),
    (20, "boefje", "org1", "dns-records", E), (20, "boefje", "org2", "dns-records", E),
    (20, "boefje", "org1", "on-create", E), (20, "boefje", "org1", "late", E),
    (20, "normalizer", "org1", "kat_dns_normalize", E), (20, "normalizer", "org2", "kat_dns_normalize", E),
}  # fmt: skip


class Day:
    """The running simulation: two workers, a snapshotter, the broker and the fake runners."""

    def __init__(self, world, clock, queues, history, broker, settings, names, recipes) -> None:
        self.world, self.clock, self.queues, self.history = world, clock, queues, history
        self.broker, self.settings, self.names, self.recipes = broker, settings, names, recipes
        self.workers: list[SchedulerRunner] = []
        self.clients: list[ServiceClients] = []
        self.handled = collections.Counter()
        self.published = collections.Counter()
        self.created: list[tuple] = []
        self.dedup_keys: dict[tuple, str | None] = {}

    async def start_worker(self) -> SchedulerRunner:
        clients = ServiceClients.from_settings(self.settings, cache_ttl=0)  # the world changes faster than any TTL
        self.clients.append(clients)
        worker = build_schedulers(
            self.settings, self.queues, self.history, clients, clock=self.clock, interval=None,
            mutations_queue=self.names["mutations"], raw_files_queue=self.names["raw"],
        )  # fmt: skip
        self.count_handling(worker)
        await worker.start()
        return worker

    def count_handling(self, worker: SchedulerRunner) -> None:
        worker.boefje.handle_mutation = self._counted(worker.boefje.handle_mutation, "mutations")
        worker.normalizer.handle_raw_file = self._counted(worker.normalizer.handle_raw_file, "raw")

    def _counted(self, handle, queue: str):
        async def counted(message) -> None:
            try:
                await handle(message)
            finally:
                self.handled[queue] += 1

        return counted

    async def publish(self, queue: str, messages: list) -> None:
        self.broker.publish(self.names[queue], *messages)
        self.published[queue] += len(messages)
        while self.handled[queue] < self.published[queue]:
            await asyncio.sleep(0.005)

    async def settle(self) -> None:
        assert await wait_caught_up(self.queues.redis, self.queues.layout, timeout=5)

    async def hour(self, hour: int) -> None:
        await self.publish("mutations", events_at(hour, self.world))
        await asyncio.gather(*(worker.tick() for worker in self.workers))
        raw_files = [self.run_boefje(task) for task in await self.take("boefje", hour)]
        await self.publish("raw", raw_files)
        await self.take("normalizer", hour)
        await self.take("report", hour)
        await self.settle()

    async def take(self, scheduler_id: str, hour: int) -> list[dict]:
        """Pop every queued task (boefje pops come one by one or in dedup batches), finish it."""
        taken = []
        while batch := await self.queues.pop(scheduler_id, limit=100):
            for record in batch:
                await self.queues.patch(record.id, {"status": "completed"})
                data = msgspec.json.decode(record.data)
                taken.append(data)
                self.created.append((hour, scheduler_id, record.organisation, *self.describe(scheduler_id, data)))
                if scheduler_id == "boefje":
                    self.dedup_keys[self.created[-1]] = data["deduplication_key"]
        return taken

    def describe(self, scheduler_id: str, data: dict) -> tuple:
        if scheduler_id == "boefje":
            return data["boefje"]["id"], data["input_ooi"]
        if scheduler_id == "normalizer":
            return data["normalizer"]["id"], data["raw_data"]["boefje_meta"]["input_ooi"]
        return self.recipes[data["report_recipe_id"]], None

    def run_boefje(self, task: dict) -> dict:
        """Bytes records the run; its raw file is announced (whois and on-create yield nothing
        a normalizer reads)."""
        now = self.clock.now
        boefje_id, ooi, org = task["boefje"]["id"], task["input_ooi"], task["organization"]
        self.world.record_run(boefje_id, ooi, org, now, now)
        meta = {"id": task["id"], "boefje": task["boefje"], "input_ooi": ooi, "organization": org,
                "started_at": now.isoformat(), "ended_at": now.isoformat()}  # fmt: skip
        mime = "error/timeout" if boefje_id == "on-create" else f"boefje/{boefje_id}"
        return {"organization": org, "raw_data": {"id": str(uuid.uuid4()), "boefje_meta": meta, "mime_types": [{"value": mime}]}}


@pytest.fixture
async def day(async_redis, key_prefix, monkeypatch):
    world, clock = build_world(), Clock()
    monkeypatch.setattr(snapshotter_module, "utcnow", clock)  # schedule deadlines in simulated time
    names = {"mutations": unique_queue("mutations"), "raw": unique_queue("raw")}
    queues = TaskQueues(async_redis, make_layout(key_prefix))
    broker = Broker()
    with fresh_database() as dsn:
        async with (
            history_on(dsn, async_redis, key_prefix) as history,
            serving(katalogus_app(world)) as katalogus, serving(octopoes_app(world)) as octopoes,
            serving(bytes_app(world)) as bytes_url,
        ):  # fmt: skip
            settings = Settings(
                amqp_uri=AMQP_URL, katalogus_api=katalogus, octopoes_api=octopoes, bytes_api=bytes_url,
                bytes_username="sim", bytes_password="sim",
            )  # fmt: skip
            snapshots = asyncio.create_task(
                Snapshotter(async_redis, history.tasks, history.schedules, layout=queues.layout, block_ms=50).run()
            )
            recipes = await add_report_schedules(history, clock)
            simulation = Day(world, clock, queues, history, broker, settings, names, recipes)
            simulation.workers = [await simulation.start_worker() for _ in range(2)]
            yield simulation
            for worker in simulation.workers:
                await worker.stop()
            for clients in simulation.clients:
                await clients.aclose()
            snapshots.cancel()
            await asyncio.gather(snapshots, return_exceptions=True)
    broker.close()


async def add_report_schedules(history, clock: Clock) -> dict[str, str]:
    recipes = {"daily": uuid.uuid4().hex, "once": uuid.uuid4().hex}
    timings = (("daily", "0 6 * * *", clock.now.replace(hour=6)), ("once", None, clock.now.replace(hour=12)))
    for name, cron, deadline in timings:
        data = {"organisation_id": "org1", "report_recipe_id": recipes[name]}
        new = ScheduleCreate(scheduler_id="report", organisation="org1", data=data, schedule=cron, deadline_at=deadline)
        await history.schedules.create(new)
    return {recipe: name for name, recipe in recipes.items()}


async def test_a_day_creates_each_expected_task_exactly_once(day: Day):
    sweeps = {}
    for hour in range(25):
        day.clock.now = T0 + timedelta(hours=hour)
        if hour == 12:  # a worker restarts: it must not sweep every boefje again
            await day.workers[1].stop()
            day.workers[1] = await day.start_worker()
        await day.hour(hour)
        sweeps[hour] = sorted(r for r in day.world.requests if r.startswith("objects"))
        day.world.requests.clear()

    assert len(day.created) == len(set(day.created)), "a task was created twice"
    # Every boefje is swept once, the first time it is seen enabled; not again after the restart.
    assert {hour: found for hour, found in sweeps.items() if found} == {
        0: ["objects org1 Hostname", "objects org1 IPAddressV4", "objects org2 Hostname", "objects org3 Hostname"],
        10: ["objects org1 Hostname"],
    }
    assert set(day.created) == EXPECTED

    # Hour 20: one event, so org2's task is org1's dedup twin: they share org1's task id as key.
    keys = {day.dedup_keys[(20, "boefje", org, "dns-records", E)] for org in ("org1", "org2")}
    assert len(keys) == 1 and None not in keys
    assert day.dedup_keys[(14, "boefje", "org1", "dns-records", D)] is None  # org2 has no d

    _, boefje_schedules = await day.history.schedules.list(scheduler_id="boefje", limit=100)
    schedules = {s.data.get("input_ooi"): s for s in boefje_schedules}
    assert schedules[C].enabled is False and schedules[C].schedule == "0 */8 * * *"  # object gone at 16
    assert "on-create" not in {s.data["boefje"]["id"] for s in schedules.values()}
    _, reports = await day.history.schedules.list(scheduler_id="report", limit=10)
    deadlines = {day.recipes[r.data["report_recipe_id"]]: r.deadline_at for r in reports}
    assert deadlines == {"daily": T0 + timedelta(days=1, hours=6), "once": None}
