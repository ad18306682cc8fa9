from __future__ import annotations

import pytest

from redisched.client import Client
from redisched.queue.commands import QueueCommands, QueueOptions
from redisched.queue.queue import TaskQueues


def make_commands(prefix: str, **overrides) -> QueueCommands:
    return QueueCommands(prefix=prefix, **overrides)


@pytest.fixture
def queues(async_redis, key_prefix) -> TaskQueues:
    return TaskQueues(async_redis, make_commands(key_prefix))


@pytest.fixture
def client(sync_redis, key_prefix) -> Client:
    return Client(sync_redis, make_commands(key_prefix))


__all__ = ["QueueOptions", "make_commands"]
