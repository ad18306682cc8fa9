"""Real-server plumbing for the scheduler integration and simulation tests: a fresh Postgres
database, the fake world's HTTP servers on random ports, and RabbitMQ publishing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import pika
import uvicorn

from redisched.queue.layout import QueueLayout
from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.history.schedules import ScheduleStore
from redisched.history.scheduler_queries import SchedulerHistory
from redisched.history.tasks import TaskStore
from tests.conftest import AMQP_URL, PG_ADMIN_DSN
from tests.support.databases import throwaway_database


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own (the due-schedule queries see every schedule in a database)."""
    with throwaway_database(PG_ADMIN_DSN, "redisched_sched") as dsn:
        yield dsn


@contextlib.asynccontextmanager
async def history_on(dsn: str, redis, prefix: str) -> AsyncIterator[SchedulerHistory]:
    await migrate(dsn)
    pool = await open_pool(dsn)
    try:
        yield SchedulerHistory(TaskStore(pool), ScheduleStore(pool, redis, QueueLayout(prefix)))
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 at a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class Broker:
    """Publishes JSON to RabbitMQ queues (declared durable, as OpenKAT does) and deletes them."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.declared: set[str] = set()

    def publish(self, queue: str, *messages: object) -> None:
        if queue not in self.declared:
            self.channel.queue_declare(queue, durable=True)
            self.declared.add(queue)
        for message in messages:
            self.channel.basic_publish("", queue, msgspec.json.encode(message))

    def close(self) -> None:
        for queue in self.declared:
            self.channel.queue_delete(queue)
            self.channel.queue_delete(f"{queue}.dead")
        self.connection.close()


def unique_queue(name: str) -> str:
    return f"redisched-test-{uuid.uuid4().hex[:8]}-{name}"
