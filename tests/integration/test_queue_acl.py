"""The direct client's ACL user can do its work and nothing else."""

from __future__ import annotations

import pytest
import redis

from redisched.client import Client
from redisched.queue.acl import acl_rules
from redisched.queue.layout import QueueLayout
from tests.factories import boefje_data
from tests.support.servers import private_redis


@pytest.fixture(scope="module")
def acl_redis():
    with private_redis() as url:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "runner", *acl_rules("s3cret", "rs"))
        admin.set("other:app:secret", "keep out")
        yield url, admin
        admin.close()


def test_the_acl_user_can_push_pop_and_complete(acl_redis):
    url, _ = acl_redis
    user = redis.Redis.from_url(url.replace("redis://", "redis://runner:s3cret@"))
    queue = Client(user, QueueLayout(prefix="rs")).queue("boefje")
    pushed = queue.push(organisation="o", data=boefje_data(), priority=1)
    [popped] = queue.pop()
    assert popped.id == pushed.id
    assert queue.patch(popped.id, {"status": "completed"}, token=popped.lease).status == "completed"
    assert queue.qsize() == 0


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("KEYS", "*"), ("GET", "other:app:secret"), ("CONFIG", "GET", "*"), ("HGET", "other:hash", "f")],
)
def test_the_acl_user_cannot_flush_or_read_other_keys(acl_redis, command):
    url, admin = acl_redis
    user = redis.Redis.from_url(url.replace("redis://", "redis://runner:s3cret@"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.execute_command(*command)
    assert admin.get("other:app:secret") == b"keep out"


def test_a_script_cannot_reach_keys_outside_the_prefix(acl_redis):
    url, _ = acl_redis
    user = redis.Redis.from_url(url.replace("redis://", "redis://runner:s3cret@"))
    queue = Client(user, QueueLayout(prefix="other")).queue("boefje")
    with pytest.raises(redis.exceptions.NoPermissionError):
        queue.push(organisation="o", data=boefje_data(), priority=1)
