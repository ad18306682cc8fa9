"""The asyncio queue the API, the schedulers and the background loops use: the queue
operations (facade.py) on the asyncio driver. Each method returns an awaitable."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redisched.queue.driver import AsyncDriver
from redisched.queue.facade import QueueFacade
from redisched.queue.layout import QueueLayout


class TaskQueues(QueueFacade):
    def __init__(self, redis: Redis | RedisCluster, layout: QueueLayout) -> None:
        super().__init__(AsyncDriver(redis), layout)
