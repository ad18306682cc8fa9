"""The direct client: trusted components push and pop straight on Redis, through the same
plans and scripts as the API, without HTTP. ``Client`` is sync, ``AsyncClient`` asyncio; both
have the API's queue methods (queue/facade.py), with the same defaults and behaviour.

    from redisched.client import Client
    queue = Client.from_url("redis://127.0.0.1:6379/0").queue("boefje")
    task = queue.push(organisation="org1", priority=10, data={...})
    [popped] = queue.pop(filters={"filters": [...]}, limit=1)
    queue.patch(popped.id, {"status": "completed"}, token=popped.lease)

``from_url`` reaches a Redis Cluster too (asked of the server unless ``cluster`` says);
``layout`` must match the API's (``QueueLayout.from_settings(Settings())`` reads the same
environment).
"""

from __future__ import annotations

import redis
import redis.asyncio as aredis

from redisched.queue.driver import SyncDriver
from redisched.queue.facade import QueueFacade
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues


def is_cluster(url: str) -> bool:
    """Whether the Redis at ``url`` runs in cluster mode."""
    with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as probe:
        return bool(probe.info("cluster").get("cluster_enabled"))


class Client(QueueFacade):
    """Synchronous client on one Redis (or Redis Cluster) connection pool."""

    def __init__(self, redis_client: redis.Redis | redis.RedisCluster, layout: QueueLayout) -> None:
        super().__init__(SyncDriver(redis_client), layout)

    @classmethod
    def from_url(cls, url: str, layout: QueueLayout | None = None, *, cluster: bool | None = None) -> Client:
        connect = redis.RedisCluster if (is_cluster(url) if cluster is None else cluster) else redis.Redis
        return cls(connect.from_url(url), layout or QueueLayout())

    def close(self) -> None:
        self.redis.close()


class AsyncClient(TaskQueues):
    """The asyncio client: the API's own queue object, opened from a URL."""

    @classmethod
    def from_url(cls, url: str, layout: QueueLayout | None = None, *, cluster: bool | None = None) -> AsyncClient:
        connect = aredis.RedisCluster if (is_cluster(url) if cluster is None else cluster) else aredis.Redis
        return cls(connect.from_url(url), layout or QueueLayout())

    async def close(self) -> None:
        await self.redis.aclose()
