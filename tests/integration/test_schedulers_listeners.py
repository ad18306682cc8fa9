"""The schedulers' listeners on the real RabbitMQ: events in, tasks in the real Redis queues."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from redisched.clients.amqp import Backoff
from redisched.config import Settings
from redisched.history.snapshotter import Snapshotter
from redisched.queue.queue import TaskQueues
from redisched.schedulers.runner import run_schedulers
from tests.conftest import AMQP_URL
from tests.integration.conftest import make_layout
from tests.simulation.fakes import Clock
from tests.simulation.harness import Broker, fresh_database, history_on, unique_queue
from tests.simulation.world import World, boefje, normalizer

pytestmark = pytest.mark.timeout(30)

HOST = "Hostname|internet|listened.example"


@pytest.fixture
def dsn():
    """A database per test: the snapshotter writes each test's tasks into the history, where
    the next test's scheduler would find them and (rightly) not create them again."""
    with fresh_database() as dsn:
        yield dsn


@pytest.fixture
def world() -> World:
    world = World()
    world.add_plugin("org1", boefje("dns-records", scan_level=1))
    world.add_plugin("org1", normalizer("kat_dns_normalize", ["boefje/dns-records"]))
    world.add_object("org1", HOST, 1)
    return world


@pytest.fixture
async def running(dsn, world, async_redis, key_prefix):
    queues = TaskQueues(async_redis, make_layout(key_prefix))
    katalogus, octopoes, bytes_client = world.clients()
    clients = SimpleNamespace(katalogus=katalogus, octopoes=octopoes, bytes=bytes_client, unconfigured=lambda: [])
    names = {"mutations_queue": unique_queue("mutations"), "raw_files_queue": unique_queue("raw")}
    broker = Broker()
    fast = {"retry_backoff": Backoff(0.01, 0.05), "reconnect_backoff": Backoff(0.1, 0.5), "max_attempts": 2}
    async with history_on(dsn, async_redis, key_prefix) as history:
        # As in a deployment: a listener judging a second event waits for the history of the
        # first one's tasks, which only the snapshotter writes.
        snapshots = asyncio.create_task(
            Snapshotter(async_redis, history.tasks, history.schedules, layout=queues.layout, block_ms=20).run()
        )
        runner = await run_schedulers(
            Settings(amqp_uri=AMQP_URL), queues, history, clients,
            clock=Clock(), interval=None, listener_options=fast, **names,
        )  # fmt: skip
        yield SimpleNamespace(queues=queues, broker=broker, runner=runner, **names)
        await runner.stop()
        snapshots.cancel()
        await asyncio.gather(snapshots, return_exceptions=True)
    broker.close()


async def wait_for(queues: TaskQueues, scheduler_id: str, n: int) -> None:
    for _ in range(500):
        if await queues.qsize(scheduler_id) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{scheduler_id}: {await queues.qsize(scheduler_id)} tasks queued, expected {n}")


def mutation(pk: str, level: int, operation: str = "create") -> dict:
    value = {"primary_key": pk, "object_type": "Hostname", "scan_profile": {"level": level}}
    return {"operation": operation, "primary_key": pk, "value": value, "client_id": "org1"}


def raw_file(mime_type: str) -> dict:
    meta = {
        "id": str(uuid.uuid4()), "boefje": {"id": "dns-records"}, "input_ooi": HOST, "organization": "org1",
        "started_at": "2030-01-07T00:00:00Z", "ended_at": "2030-01-07T00:01:00Z",
    }  # fmt: skip
    return {"organization": "org1", "raw_data": {"id": str(uuid.uuid4()), "boefje_meta": meta, "mime_types": [{"value": mime_type}]}}


async def test_a_scan_profile_mutation_becomes_a_boefje_task_in_redis(running):
    running.broker.publish(running.mutations_queue, mutation(HOST, 1))
    await wait_for(running.queues, "boefje", 1)
    [task] = await running.queues.peek("boefje")
    assert (task.organisation, task.status, task.schedule_id is not None) == ("org1", "queued", True)
    assert '"input_ooi":"Hostname|internet|listened.example"' in task.data


async def test_a_raw_file_becomes_a_normalizer_task_and_an_error_file_none(running):
    running.broker.publish(running.raw_files_queue, raw_file("error/boefje"), raw_file("boefje/dns-records"))
    await wait_for(running.queues, "normalizer", 1)
    await asyncio.sleep(0.1)
    [task] = await running.queues.peek("normalizer")
    assert int(task.priority) == 1893974460  # boefje_meta.ended_at in epoch seconds


async def test_an_unreadable_message_is_dead_lettered_and_does_not_block_the_queue(running):
    running.broker.publish(running.mutations_queue, {"not": "a mutation"}, mutation(HOST, 1))
    await wait_for(running.queues, "boefje", 1)
    dead = running.broker.channel.queue_declare(f"{running.mutations_queue}.dead", durable=True, passive=True)
    assert dead.method.message_count == 1


async def test_a_boefje_whose_katalogus_manifest_names_a_rate_limit_group_gets_its_cooldown(running, world):
    world.add_plugin("org1", boefje("shodan", rate_limit_group="shodan:{object_type}", rate_limit_interval=60))
    other = "Hostname|internet|other.example"
    world.add_object("org1", other, 1)
    running.broker.publish(running.mutations_queue, mutation(HOST, 1), mutation(other, 1))
    await wait_for(running.queues, "boefje", 4)  # dns-records and shodan on each object
    popped = [record for _ in range(5) for record in await running.queues.pop("boefje", limit=1)]
    shodan = [record for record in popped if '"id":"shodan"' in record.data]
    assert len(popped) == 3 and len(shodan) == 1, popped  # one shodan task a minute, whatever the object
    assert shodan[0].lg == "shodan:Hostname"
    assert await running.queues.qsize("boefje") == 1  # the other waits out the manifest's cooldown
