"""Consume one RabbitMQ queue and hand each message to an asyncio handler.

Design: pika's ``BlockingConnection`` runs in a dedicated thread that only does AMQP I/O
(deliveries, acks, heartbeats); each message is handed to the event loop with
``asyncio.run_coroutine_threadsafe`` and settled back on the I/O thread with
``add_callback_threadsafe``. The reconnect logic is then a plain loop, and a busy handler
never starves heartbeats. (pika's asyncio adapter would need a callback chain per connection
step and the same reconnect state machine, spread over callbacks.)

Delivery guarantees (at least once):

- a message is acked only after its handler returned, or after it was dead-lettered;
- a transient failure (``Retryable``, or a connection error to Redis, an HTTP service, ...) is
  retried in-process with exponential backoff while the message stays unacked, up to
  ``max_attempts`` handler calls. Holding it (instead of nack + requeue) keeps the queue's
  order, needs no extra queues, and a crash still returns it to the broker;
- any other failure, an undecodable body, or a transient one that outlasts the retries
  publishes the message (same body and properties) to the durable ``<queue>.dead`` with the
  reason in ``x-redisched-*`` headers, waits for the broker's publisher confirm, then acks;
- on connection loss the thread reconnects with backoff; unacked messages come back from the
  broker, so a message whose handler was running at that moment may be handled twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pika
import pika.exceptions
import redis.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from redisched.config import Settings

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]

# How long the I/O thread blocks waiting for broker events before it checks for stop().
_POLL_SECONDS = 0.2
_MAX_REASON_CHARS = 1000


class Retryable(Exception):
    """Raised by a handler that cannot handle a message now but may later (a dependency is down)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Retryable,
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    httpx.TransportError,
)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt 0 waits about ``base`` seconds, never more than ``cap``."""

    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        # Jitter spreads the retries of many messages failing together (e.g. Redis restarting).
        return min(self.cap, self.base * 2**attempt) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class _Delivery:
    channel: BlockingChannel
    delivery_tag: int
    properties: BasicProperties
    body: bytes


@dataclass(frozen=True)
class _Failure:
    reason: str
    attempts: int


class Listener:
    """Consumes ``queue`` (durable, default exchange) and awaits ``handle(body)`` per message.

    Call ``start()`` from the event loop that should run the handler; ``await stop()`` stops
    consuming, lets in-flight handlers finish (up to ``drain_timeout``) and closes the
    connection.
    """

    def __init__(
        self,
        url: str,
        queue: str,
        handle: Handler,
        *,
        prefetch_count: int = 100,
        max_attempts: int = 5,
        retry_backoff: Backoff = Backoff(base=1.0, cap=30.0),
        reconnect_backoff: Backoff = Backoff(base=0.5, cap=30.0),
        transient_errors: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
        drain_timeout: float = 10.0,
    ) -> None:
        self.queue = queue
        self.dead_letter_queue = f"{queue}.dead"
        self.connection_name = f"redisched-listener:{queue}"
        self._url = url
        self._handle = handle
        self._prefetch_count = prefetch_count
        self._max_attempts = max_attempts
        self._retry_backoff = retry_backoff
        self._reconnect_backoff = reconnect_backoff
        self._transient_errors = transient_errors
        self._drain_timeout = drain_timeout
        self._stopping = threading.Event()
        self._in_flight: set[concurrent.futures.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, queue: str, handle: Handler, **options) -> Listener:
        if not settings.amqp_uri:
            raise ValueError("no RabbitMQ URI configured (QUEUE_URI / SCHEDULER_RABBITMQ_DSN)")
        return cls(settings.amqp_uri, queue, handle, prefetch_count=settings.rabbitmq_prefetch_count, **options)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"listener on {self.queue} already started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"amqp-listener-{self.queue}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)
        logger.info("AMQP listener on %s stopped", self.queue)

    # --- I/O thread --------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with self._open_channel() as channel:
                    failures = 0
                    self._consume(channel)
            except Exception as exc:  # broker gone, connection dropped, channel error: start over
                delay = self._reconnect_backoff.delay(failures)
                failures += 1
                logger.warning(
                    "AMQP listener on %s: %s: %s; reconnecting in %.1f s (unacked messages are redelivered)",
                    self.queue, type(exc).__name__, exc, delay,
                    exc_info=not isinstance(exc, pika.exceptions.AMQPError),  # a bug, not the broker
                )
                self._stopping.wait(delay)

    @contextlib.contextmanager
    def _open_channel(self) -> Iterator[BlockingChannel]:
        parameters = pika.URLParameters(self._url)
        parameters.client_properties = {"connection_name": self.connection_name}
        connection = pika.BlockingConnection(parameters)
        try:
            channel = connection.channel()
            # Same declaration as mula, Octopoes and Bytes (durable, no arguments), so it binds
            # to an existing OpenKAT queue without PRECONDITION_FAILED.
            channel.queue_declare(self.queue, durable=True)
            channel.queue_declare(self.dead_letter_queue, durable=True)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self._prefetch_count)
            yield channel
        finally:
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.close()

    def _consume(self, channel: BlockingChannel) -> None:
        consumer_tag = channel.basic_consume(self.queue, on_message_callback=self._on_message)
        logger.info("AMQP listener consuming %s (prefetch %d)", self.queue, self._prefetch_count)
        while not self._stopping.is_set():
            channel.connection.process_data_events(time_limit=_POLL_SECONDS)
        self._drain(channel, consumer_tag)

    def _drain(self, channel: BlockingChannel, consumer_tag: str) -> None:
        # Cancelling also nacks deliveries not yet handed to _on_message back to the queue.
        channel.basic_cancel(consumer_tag)
        deadline = time.monotonic() + self._drain_timeout
        while self._in_flight and time.monotonic() < deadline:
            channel.connection.process_data_events(time_limit=_POLL_SECONDS)
        channel.connection.process_data_events(time_limit=0)  # run the last settle callbacks
        if self._in_flight:
            logger.warning(
                "AMQP listener on %s: %d messages still being handled at stop; the broker redelivers them",
                self.queue, len(self._in_flight),
            )

    def _on_message(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        assert self._loop is not None
        delivery = _Delivery(channel, method.delivery_tag, properties, body)
        future = asyncio.run_coroutine_threadsafe(self._process(delivery), self._loop)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)

    def _settle(self, delivery: _Delivery, failure: _Failure | None) -> None:
        if failure is not None:
            self._dead_letter(delivery, failure)
        delivery.channel.basic_ack(delivery.delivery_tag)

    def _dead_letter(self, delivery: _Delivery, failure: _Failure) -> None:
        properties = delivery.properties
        properties.headers = {
            **(properties.headers or {}),
            "x-redisched-queue": self.queue,
            "x-redisched-error": failure.reason,
            "x-redisched-attempts": failure.attempts,
            "x-redisched-failed-at": int(time.time()),
        }
        properties.delivery_mode = pika.DeliveryMode.Persistent.value
        # The channel is in confirm mode: this returns once the broker has the message, and
        # raises (so the original stays unacked and is redelivered) if it cannot take it.
        delivery.channel.basic_publish("", self.dead_letter_queue, delivery.body, properties, mandatory=True)
        logger.warning(
            "AMQP listener on %s: dead-lettered message %d to %s after %d attempt(s): %s",
            self.queue, delivery.delivery_tag, self.dead_letter_queue, failure.attempts, failure.reason,
        )

    # --- event loop --------------------------------------------------------------------------

    async def _process(self, delivery: _Delivery) -> None:
        failure = await self._handle_with_retries(delivery)
        settle = functools.partial(self._settle, delivery, failure)
        try:
            delivery.channel.connection.add_callback_threadsafe(settle)
        except pika.exceptions.ConnectionWrongStateError:
            logger.info(
                "AMQP listener on %s: connection closed before message %d was acked; the broker redelivers it",
                self.queue, delivery.delivery_tag,
            )

    async def _handle_with_retries(self, delivery: _Delivery) -> _Failure | None:
        attempt = 1
        while True:
            try:
                await self._handle(delivery.body)
                return None
            except self._transient_errors as exc:
                if attempt >= self._max_attempts:
                    return _Failure(_reason(exc), attempt)
                delay = self._retry_backoff.delay(attempt - 1)
                logger.warning(
                    "AMQP listener on %s: message %d failed transiently (attempt %d/%d: %s); retrying in %.2f s",
                    self.queue, delivery.delivery_tag, attempt, self._max_attempts, _reason(exc), delay,
                )
                await asyncio.sleep(delay)
                attempt += 1
            except Exception as exc:
                logger.exception(
                    "AMQP listener on %s: handler failed on message %d", self.queue, delivery.delivery_tag
                )
                return _Failure(_reason(exc), attempt)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_REASON_CHARS]
