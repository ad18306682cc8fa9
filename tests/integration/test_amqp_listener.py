"""The RabbitMQ listener against the real broker: delivery, dead-lettering, retries, reconnects."""

from __future__ import annotations

import asyncio
import collections
import shutil
import threading
import uuid
from collections.abc import Awaitable, Callable

import msgspec
import pika
import pytest

from redisched.clients.amqp import (
    Backoff,
    Listener,
    MutationOperation,
    RawFileReceived,
    Retryable,
    ScanProfileMutation,
    json_handler,
)
from redisched.config import Settings
from tests.conftest import AMQP_URL

pytestmark = pytest.mark.timeout(30)

FAST_RETRY = Backoff(base=0.01, cap=0.05)
FAST_RECONNECT = Backoff(base=0.1, cap=0.5)


def mutation(primary_key: str, level: int = 1, operation: str = "create") -> dict:
    value = None
    if operation != "delete":
        value = {
            "primary_key": primary_key,
            "object_type": "Hostname",
            "scan_profile": {"level": level, "reference": primary_key, "scan_profile_type": "declared"},
        }
    return {"operation": operation, "primary_key": primary_key, "value": value, "client_id": "org1"}


class Broker:
    """The test's own connection: declares, publishes (with confirms), inspects and deletes queues."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def declare(self, queue: str) -> None:
        self.channel.queue_declare(queue, durable=True)

    def publish(self, queue: str, *bodies: bytes) -> None:
        for body in bodies:
            self.channel.basic_publish("", queue, body, pika.BasicProperties(content_type="application/json"))

    def publish_json(self, queue: str, *messages: dict) -> None:
        self.publish(queue, *(msgspec.json.encode(m) for m in messages))

    def message_count(self, queue: str) -> int:
        return self.channel.queue_declare(queue, durable=True, passive=True).method.message_count

    def get_all(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        messages = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((properties, body))


@pytest.fixture
def broker():
    broker = Broker()
    yield broker
    broker.connection.close()


@pytest.fixture
def queue(broker: Broker):
    name = f"test_{uuid.uuid4().hex[:12]}_scan_profile_mutations"
    broker.declare(name)
    broker.declare(f"{name}.dead")
    yield name
    cleanup = Broker()  # a fresh channel: a failed test may have left the shared one closed
    cleanup.channel.queue_delete(name)
    cleanup.channel.queue_delete(f"{name}.dead")
    cleanup.connection.close()


def fast_listener(queue: str, handler, **options) -> Listener:
    return Listener(AMQP_URL, queue, handler, reconnect_backoff=FAST_RECONNECT, **options)


@pytest.fixture
async def start_listener():
    """Starts listeners with a fast reconnect; stops them all afterwards, even when a test fails."""
    started: list[Listener] = []

    def start(listener: Listener) -> Listener:
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        await listener.stop()


class Recorder:
    """A handler that counts every call per primary key and keeps the messages it handled without error."""

    def __init__(self, on_message: Callable[[ScanProfileMutation], Awaitable[None]] | None = None) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.messages: list[ScanProfileMutation] = []
        self._on_message = on_message
        self._changed = asyncio.Condition()

    async def __call__(self, message: ScanProfileMutation) -> None:
        async with self._changed:
            self.calls[message.primary_key] += 1
            self._changed.notify_all()
        if self._on_message:
            await self._on_message(message)
        self.messages.append(message)

    async def wait_for(self, keys: set[str], timeout: float = 10) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: keys <= self.calls.keys()), timeout)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.calls.values())


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def test_messages_decode_and_ignore_unknown_fields() -> None:
    mutation_body = msgspec.json.encode({**mutation("Hostname|internet|a.example", level=2), "extra": 1})
    decoded = msgspec.json.decode(mutation_body, type=ScanProfileMutation)
    assert decoded.operation is MutationOperation.CREATE
    assert decoded.value is not None and decoded.value.scan_profile.level == 2

    deleted = msgspec.json.decode(msgspec.json.encode(mutation("x", operation="delete")), type=ScanProfileMutation)
    assert deleted.operation is MutationOperation.DELETE and deleted.value is None

    raw_file = {
        "event_id": "raw_file_received",
        "created_at": "2024-01-01T00:00:00Z",
        "organization": "org1",
        "raw_data": {
            "id": str(uuid.uuid4()),
            "boefje_meta": {
                "id": str(uuid.uuid4()),
                "boefje": {"id": "dns-records", "version": None},
                "input_ooi": "Hostname|internet|a.example",
                "organization": "org1",
                "runnable_hash": "abc",
                "ended_at": "2024-01-01T00:00:01Z",
            },
            "mime_types": [{"value": "boefje/dns-records"}],
            "signing_provider_url": None,
        },
    }
    decoded_raw = msgspec.json.decode(msgspec.json.encode(raw_file), type=RawFileReceived)
    assert decoded_raw.organization == "org1"
    assert [m.value for m in decoded_raw.raw_data.mime_types] == ["boefje/dns-records"]


async def test_every_message_is_handled_once_and_acked(broker: Broker, queue: str, start_listener) -> None:
    recorder = Recorder()
    settings = Settings(amqp_uri=AMQP_URL, rabbitmq_prefetch_count=10)
    listener = start_listener(Listener.from_settings(settings, queue, json_handler(ScanProfileMutation, recorder)))
    keys = {f"Hostname|internet|host{i}.example" for i in range(100)}
    broker.publish_json(queue, *(mutation(key) for key in sorted(keys)))

    await recorder.wait_for(keys)
    await listener.stop()

    assert recorder.calls.keys() == keys
    assert recorder.duplicates == 0
    assert broker.message_count(queue) == 0
    assert broker.message_count(listener.dead_letter_queue) == 0


async def test_poison_messages_are_dead_lettered_with_reason_and_do_not_block(
    broker: Broker, queue: str, start_listener
) -> None:
    async def explode_on_bad(message: ScanProfileMutation) -> None:
        if message.primary_key == "bad":
            raise ValueError("cannot handle this object")

    recorder = Recorder(explode_on_bad)
    listener = start_listener(fast_listener(queue, json_handler(ScanProfileMutation, recorder)))
    broker.publish(queue, msgspec.json.encode(mutation("first")), b"{not json")
    broker.publish_json(queue, mutation("bad"), mutation("last"))

    await recorder.wait_for({"first", "bad", "last"})
    await wait_until(lambda: broker.message_count(listener.dead_letter_queue) == 2)
    await listener.stop()

    assert sorted(m.primary_key for m in recorder.messages) == ["first", "last"]
    assert broker.message_count(queue) == 0
    dead = {body: properties for properties, body in broker.get_all(listener.dead_letter_queue)}
    undecodable = dead[b"{not json"].headers
    assert undecodable["x-redisched-error"].startswith("DecodeError: JSON is malformed")
    assert undecodable["x-redisched-queue"] == queue
    assert undecodable["x-redisched-attempts"] == 1
    raised = dead[msgspec.json.encode(mutation("bad"))]
    assert raised.headers["x-redisched-error"] == "ValueError: cannot handle this object"
    assert raised.content_type == "application/json"
    assert raised.delivery_mode == pika.DeliveryMode.Persistent.value


async def test_transient_failures_are_retried_then_dead_lettered(
    broker: Broker, queue: str, start_listener
) -> None:
    async def flaky(message: ScanProfileMutation) -> None:
        if message.primary_key == "recovers" and recorder.calls["recovers"] < 3:
            raise Retryable("Redis is restarting")
        if message.primary_key == "never":
            raise ConnectionError("Redis is gone")

    recorder = Recorder(flaky)
    listener = start_listener(
        fast_listener(queue, json_handler(ScanProfileMutation, recorder), max_attempts=4, retry_backoff=FAST_RETRY)
    )
    broker.publish_json(queue, mutation("recovers"), mutation("never"), mutation("fine"))

    await wait_until(lambda: broker.message_count(listener.dead_letter_queue) == 1)
    await recorder.wait_for({"recovers", "fine"})
    await listener.stop()

    assert recorder.calls == {"recovers": 3, "never": 4, "fine": 1}
    assert sorted(m.primary_key for m in recorder.messages) == ["fine", "recovers"]
    assert broker.message_count(queue) == 0
    [(properties, body)] = broker.get_all(listener.dead_letter_queue)
    assert msgspec.json.decode(body)["primary_key"] == "never"
    assert properties.headers["x-redisched-error"] == "ConnectionError: Redis is gone"
    assert properties.headers["x-redisched-attempts"] == 4


async def close_connection_named(name: str) -> None:
    """Force-close, through the broker, the one connection with this client-given name."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl is needed to drop the listener's connection"
    listing = await asyncio.create_subprocess_exec(
        rabbitmqctl, "list_connections", "-q", "--no-table-headers", "pid", "client_properties",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await listing.communicate()
    [pid] = [line.split("\t")[0] for line in stdout.decode().splitlines() if f'"{name}"' in line]
    closing = await asyncio.create_subprocess_exec(
        rabbitmqctl, "close_connection", pid, "test: simulated connection loss", stdout=asyncio.subprocess.DEVNULL
    )
    assert await closing.wait() == 0


async def test_reconnects_after_connection_loss_and_loses_nothing(
    broker: Broker, queue: str, start_listener
) -> None:
    released = asyncio.Event()

    async def held_after_the_first_30(message: ScanProfileMutation) -> None:
        if len(recorder.calls) > 30:
            await released.wait()

    recorder = Recorder(held_after_the_first_30)
    prefetch = 20
    listener = start_listener(
        fast_listener(queue, json_handler(ScanProfileMutation, recorder), prefetch_count=prefetch)
    )
    before = [f"before-{i}" for i in range(300)]
    broker.publish_json(queue, *(mutation(key) for key in before))
    await wait_until(lambda: len(recorder.calls) >= 30 + prefetch)

    await close_connection_named(listener.connection_name)
    released.set()
    after = [f"after-{i}" for i in range(50)]
    broker.publish_json(queue, *(mutation(key) for key in after))

    await recorder.wait_for(set(before) | set(after), timeout=15)
    await listener.stop()

    assert broker.message_count(queue) == 0
    assert broker.message_count(listener.dead_letter_queue) == 0
    # At least once: the messages in flight at the loss were never acked, so they come back.
    assert 0 < recorder.duplicates <= prefetch
    assert len(recorder.messages) == len(before) + len(after) + recorder.duplicates


async def test_stop_lets_in_flight_handlers_finish_and_acks_them(
    broker: Broker, queue: str, start_listener
) -> None:
    async def slow(message: ScanProfileMutation) -> None:
        await asyncio.sleep(0.3)

    recorder = Recorder(slow)
    listener = start_listener(fast_listener(queue, json_handler(ScanProfileMutation, recorder)))
    keys = {f"k{i}" for i in range(5)}
    broker.publish_json(queue, *(mutation(key) for key in sorted(keys)))
    await recorder.wait_for(keys)

    await listener.stop()

    assert len(recorder.messages) == 5
    assert broker.message_count(queue) == 0
    assert not any(thread.name == f"amqp-listener-{queue}" for thread in threading.enumerate())


async def test_stop_returns_promptly_while_the_broker_is_unreachable(start_listener) -> None:
    handler = json_handler(ScanProfileMutation, Recorder())
    listener = start_listener(Listener("amqp://guest:guest@127.0.0.1:1/%2F", "unreachable", handler))
    await asyncio.sleep(0.3)
    async with asyncio.timeout(2):
        await listener.stop()
