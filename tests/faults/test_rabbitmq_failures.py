"""Scenario 5: RabbitMQ fails under the schedulers' listeners (the boefje scheduler's
scan-profile mutations listener and the normalizer scheduler's raw-file listener) while
events flow in bursts and runners push and pop: either the broker force-closes their
connections, by name, twice, or the broker itself restarts (``rabbitmqctl stop_app`` /
``start_app``: every connection drops, the durable queues and their persistent messages
stay). The messages in flight come back (at least once); dedup by hash keeps a redelivered
message from becoming a second task: every message becomes exactly one task."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import msgspec
import pika
import psycopg
import pytest

from redisched.clients.amqp import Backoff
from redisched.config import Settings
from redisched.history.scheduler_queries import SchedulerHistory
from redisched.schedulers.runner import run_schedulers
from tests.conftest import AMQP_URL
from tests.faults.audit import audit, report
from tests.faults.background import Background
from tests.faults.common import log
from tests.faults.load import DirectRunner, Ledger, Load
from tests.simulation.world import World, boefje, normalizer

pytestmark = pytest.mark.timeout(120, method="thread")

LEASE_MS = 2000
PUBLISH_SECONDS, MUTATIONS_PER_S, RAW_FILES_PER_S = 7.0, 180, 60
KATALOGUS_DELAY = 0.2  # a Katalogus answering in 200 ms: handlers overlap, messages are in flight


def close_connections_named(*names: str) -> int:
    """Force-close, through the broker, the connections with these client-given names."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl is needed to drop the listeners' connections"
    listing = subprocess.run(
        [rabbitmqctl, "list_connections", "-q", "--no-table-headers", "pid", "client_properties"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    pids = [line.split("\t")[0] for line in listing.stdout.splitlines() if any(f'"{n}"' in line for n in names)]
    for pid in pids:
        subprocess.run([rabbitmqctl, "close_connection", pid, "faults: connection lost"], capture_output=True, timeout=30, check=True)
    return len(pids)


def mutation(primary_key: str) -> dict:
    value = {"primary_key": primary_key, "object_type": "Hostname", "scan_profile": {"level": 1}}
    return {"operation": "create", "primary_key": primary_key, "value": value, "client_id": "org1"}


def raw_file(raw_id: str) -> dict:
    meta = {
        "id": str(uuid.uuid4()), "boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|raw.example",
        "organization": "org1", "started_at": "2030-01-07T00:00:00Z", "ended_at": "2030-01-07T00:01:00Z",
    }  # fmt: skip
    return {"organization": "org1", "raw_data": {"id": raw_id, "boefje_meta": meta, "mime_types": [{"value": "boefje/dns-records"}]}}


def restart_broker() -> int:
    """Stop and start the RabbitMQ application (the node stays up); returns 1, the restart."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl is needed to restart the broker"
    try:
        subprocess.run([rabbitmqctl, "stop_app"], capture_output=True, timeout=60, check=True)
        time.sleep(1)
    finally:  # whatever happened, the broker must be back for the tests after this one
        subprocess.run([rabbitmqctl, "start_app"], capture_output=True, timeout=60, check=True)
        subprocess.run([rabbitmqctl, "await_startup"], capture_output=True, timeout=60, check=True)
    return 1


PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


class Publisher:
    """Publishes with confirms, persistent; a batch that failed (the broker went away) is
    sent again on a new connection, whole, until ``patience`` seconds have passed."""

    def __init__(self, patience: float = 30) -> None:
        self.patience = patience
        self._connect()

    def _connect(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def _again(self, action):
        deadline = time.monotonic() + self.patience
        while True:
            try:
                return action()
            except pika.exceptions.AMQPError:
                assert time.monotonic() < deadline, "RabbitMQ did not come back"
                time.sleep(0.2)
                try:
                    self._connect()
                except pika.exceptions.AMQPError:
                    pass

    def publish(self, queue: str, messages: list[dict]) -> None:
        def send() -> None:
            for message in messages:
                self.channel.basic_publish("", queue, msgspec.json.encode(message), PERSISTENT)

        self._again(send)

    def count(self, queue: str) -> int:
        return self._again(lambda: self.channel.queue_declare(queue, durable=True, passive=True).method.message_count)

    def close(self, queues: list[str]) -> None:
        for queue in queues:
            self.channel.queue_delete(queue)
        self.connection.close()


def close_listener_connections(names: list[str]) -> int:
    closed = close_connections_named(*names)
    time.sleep(0.5)
    return closed + close_connections_named(*names)


FAULTS = {  # name -> (inject(listener connection names) -> faults injected, how many expected)
    "connections closed": (close_listener_connections, 4),
    "broker restarted": (lambda _names: restart_broker(), 1),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_rabbitmq_failure_loses_no_message_and_doubles_none(private_redis_server, dsn, prefix, fault):
    inject, expected_faults = FAULTS[fault]
    redis_url = private_redis_server.url
    world = World()
    world.add_plugin("org1", boefje("dns-records", scan_level=1))
    world.add_plugin("org1", normalizer("kat_dns_normalize", ["boefje/dns-records"]))
    katalogus, octopoes, bytes_client = world.clients()
    get_plugins = katalogus.get_plugins

    async def slow_get_plugins(*args, **kwargs):
        await asyncio.sleep(KATALOGUS_DELAY)
        return await get_plugins(*args, **kwargs)

    katalogus.get_plugins = slow_get_plugins
    clients = SimpleNamespace(katalogus=katalogus, octopoes=octopoes, bytes=bytes_client, unconfigured=lambda: [])
    tag = uuid.uuid4().hex[:8]
    mutations_queue, raw_files_queue = f"redisched-faults-{tag}-mutations", f"redisched-faults-{tag}-raw"
    amqp_queues = [mutations_queue, raw_files_queue, f"{mutations_queue}.dead", f"{raw_files_queue}.dead"]
    publisher = Publisher()
    for queue in (mutations_queue, raw_files_queue):
        publisher.channel.queue_declare(queue, durable=True)
    ledger = Ledger()
    runner = DirectRunner(redis_url, prefix, ledger, lease_ms=LEASE_MS)
    pushes_per_hash: collections.Counter = collections.Counter()
    history_blind: collections.Counter = collections.Counter()  # hash pushed already, history has no task
    with Background(redis_url, dsn, prefix, lease_ms=LEASE_MS) as background:

        async def start():
            history = SchedulerHistory(background.tasks, background.schedules)
            fast = {"retry_backoff": Backoff(0.01, 0.05), "reconnect_backoff": Backoff(0.1, 0.3)}
            schedulers = await run_schedulers(
                Settings(amqp_uri=AMQP_URL), background.queues, history, clients, interval=None,
                listener_options=fast, mutations_queue=mutations_queue, raw_files_queue=raw_files_queue,
            )  # fmt: skip
            outlet = schedulers.boefje.ctx.outlet
            push = outlet.push

            async def counted(scheduler_id, organisation, payload, priority, **options):
                pushes_per_hash[payload.hash()] += 1
                return await push(scheduler_id, organisation, payload, priority, **options)

            outlet.push = counted
            latest_tasks = history.latest_tasks

            async def seen_latest(hashes):  # did the history know the task a redelivery made?
                found = await latest_tasks(hashes)
                for each in hashes:
                    if pushes_per_hash[each] and each not in found:
                        history_blind[each] += 1
                return found

            history.latest_tasks = seen_latest
            return schedulers

        schedulers = background.call(start())
        names = [listener.connection_name for listener in schedulers.listeners]
        assert len(names) == 2
        load = Load(ledger, runner.push, runner.pop_and_complete, pushers=1, poppers=2, push_rate=100, max_seconds=45).start()
        hosts, raw_ids, closed = [], [], 0

        def publish_steadily() -> None:  # its own connection: pika's is not thread-safe
            steady = Publisher()
            try:
                started, n = time.monotonic(), 0
                while (elapsed := time.monotonic() - started) < PUBLISH_SECONDS:
                    while n < elapsed * 10:  # ten batches a second
                        batch = [f"Hostname|internet|p{n}-{i}-{tag}.example" for i in range(MUTATIONS_PER_S // 10)]
                        raws = [str(uuid.uuid4()) for _ in range(RAW_FILES_PER_S // 10)]
                        steady.publish(mutations_queue, [mutation(host) for host in batch])
                        steady.publish(raw_files_queue, [raw_file(raw_id) for raw_id in raws])
                        hosts.extend(batch)
                        raw_ids.extend(raws)
                        n += 1
                    time.sleep(0.02)
            finally:
                with contextlib.suppress(pika.exceptions.AMQPError):
                    steady.connection.close()

        flow = threading.Thread(target=publish_steadily, name="publisher", daemon=True)
        try:
            time.sleep(1)
            fault_start = time.monotonic()
            flow.start()
            time.sleep(1)
            closed += inject(names)
            flow.join(PUBLISH_SECONDS + 30)
            assert not flow.is_alive()
            deadline = time.monotonic() + 30
            while publisher.count(mutations_queue) or publisher.count(raw_files_queue):
                assert time.monotonic() < deadline, "the listeners did not consume everything"
                time.sleep(0.1)
            time.sleep(1)  # the last handlers finish
            fault_end = time.monotonic()
        finally:
            load.stop()
            background.call(schedulers.stop())
        dead = publisher.count(f"{mutations_queue}.dead") + publisher.count(f"{raw_files_queue}.dead")
        publisher.close(amqp_queues)
        assert background.drained(20)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT id::text, scheduler_id, data->>'input_ooi', data->'raw_data'->>'id' FROM tasks"
            ).fetchall()
        per_host = collections.Counter(ooi for _, sid, ooi, _ in rows if sid == "boefje" and ooi in set(hosts))
        per_raw = collections.Counter(raw for _, sid, _, raw in rows if sid == "normalizer")
        for task_id, sid, ooi, raw in rows:  # the schedulers' tasks count as pushed for the audit
            if (sid == "boefje" and ooi in per_host) or sid == "normalizer":
                ledger.pushed.setdefault(task_id, 0.0)
        result = audit(f"amqp {fault}", ledger, background, redis_url, dsn, prefix)
    runner.close()
    redelivered = sum(n - 1 for n in pushes_per_hash.values() if n > 1)
    missing_hosts = [h for h in hosts if per_host[h] == 0]
    missing_raws = [r for r in raw_ids if per_raw[r] == 0]
    doubled = [h for h, n in per_host.items() if n > 1] + [r for r, n in per_raw.items() if n > 1]
    result.extra.update(
        messages=len(hosts) + len(raw_ids), faults_injected=closed, redelivered_messages=redelivered,
        messages_lost=len(missing_hosts) + len(missing_raws), messages_doubled=len(doubled), dead_lettered=dead,
        history_blind_to_a_pushed_hash=len(history_blind),
    )  # fmt: skip
    report(result, ledger, fault_start, fault_end, closed)
    if doubled:
        with psycopg.connect(dsn) as conn:
            for host in doubled[:3]:
                twins = conn.execute(
                    "SELECT id, status, created_at, modified_at FROM tasks WHERE data->>'input_ooi' = %s ORDER BY created_at", [host]
                ).fetchall()
                log(f"[faults] amqp: one message, two tasks: {host}: " + "; ".join(
                    f"{status} created {created:%H:%M:%S.%f} modified {modified:%H:%M:%S.%f}" for _, status, created, modified in twins))
    log(f"[faults] amqp: snapshot lag seen {background.snapshotter.lag}")
    assert closed == expected_faults, f"{closed} faults injected ({fault}), expected {expected_faults}"
    assert not missing_hosts and not missing_raws, f"messages without a task: {missing_hosts[:3]} {missing_raws[:3]}"
    assert not doubled, f"messages that became two tasks: {doubled[:5]}"
    assert dead == 0
    assert redelivered > 0, "no message was redelivered: the fault did not hit messages in flight"
    result.check()
