"""The direct client's ACL user can do its work and nothing else."""

from __future__ import annotations

import pytest
import redis

from redisched.client import Client
from redisched.queue.acl import acl_rules
from redisched.queue.layout import QueueLayout
from redisched.queue.scripts import FunctionsNotLoaded, library
from tests.factories import boefje_data
from tests.support.servers import private_redis


@pytest.fixture(scope="module")
def acl_redis():
    with private_redis() as url:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "runner", *acl_rules("s3cret", "rs"))
        admin.set("other:app:secret", "keep out")
        Client(admin, QueueLayout(prefix="rs")).load_functions()  # what the service does at start
        yield url, admin
        admin.close()


def _user(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.replace("redis://", "redis://runner:s3cret@"))


def test_the_acl_user_can_push_pop_and_complete(acl_redis):
    url, admin = acl_redis
    admin.config_resetstat()
    queue = Client(_user(url), QueueLayout(prefix="rs")).queue("boefje")
    pushed = queue.push(organisation="o", data=boefje_data(), priority=1)
    assert queue.peek()[0].id == pushed.id
    [popped] = queue.pop()
    assert popped.id == pushed.id
    assert queue.patch(popped.id, {"status": "completed"}, token=popped.lease).status == "completed"
    assert queue.qsize() == 0
    stats = admin.info("commandstats")
    assert stats["cmdstat_fcall"]["calls"] >= 3 and stats["cmdstat_fcall_ro"]["calls"] >= 1
    assert not {"cmdstat_eval", "cmdstat_evalsha"} & set(stats)


RUNS_NO_LUA_OF_ITS_OWN = [
    ("EVAL", "while true do end", 0),
    ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 0),
    ("EVAL_RO", "return 1", 0),
    ("SCRIPT", "LOAD", "return 1"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "LOAD", "REPLACE", "#!lua name=mine\nredis.register_function('spin', function() while true do end end)"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "DELETE", "x"),
    ("FUNCTION", "RESTORE", "x"),
]
RAW_WRITES_IT_DOES_NOT_NEED = [
    ("DEL", "rs:{boefje:0}:tasks"),
    ("SET", "rs:x", "1"),
    ("XTRIM", "rs:{boefje:0}:events", "MAXLEN", "0"),
    ("XACK", "rs:{boefje:0}:events", "g", "0-1"),
    ("UNLINK", "rs:{boefje:0}:queue"),
    ("RENAME", "rs:{boefje:0}:queue", "rs:y"),
]


@pytest.mark.parametrize("command", RUNS_NO_LUA_OF_ITS_OWN + RAW_WRITES_IT_DOES_NOT_NEED, ids=lambda c: " ".join(c[:2]))
def test_the_acl_user_runs_no_lua_of_its_own_nor_raw_writes_it_does_not_need(acl_redis, command):
    url, admin = acl_redis
    with pytest.raises(redis.exceptions.NoPermissionError):
        _user(url).execute_command(*command)
    assert admin.execute_command("FUNCTION", "LIST", "LIBRARYNAME", library().name)  # still loaded


def test_without_the_functions_the_acl_user_gets_a_clear_error_and_the_service_reloads_them():
    with private_redis() as url:
        admin = redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "runner", *acl_rules("s3cret", "rs"))
        queue = Client(_user(url), QueueLayout(prefix="rs")).queue("boefje")
        with pytest.raises(FunctionsNotLoaded, match="start this version of the redisched service"):
            queue.push(organisation="o", data=boefje_data(), priority=1)
        service = Client(admin, QueueLayout(prefix="rs")).queue("boefje")
        pushed = service.push(organisation="o", data=boefje_data(), priority=1)  # loads them on "not found"
        assert [task.id for task in queue.pop()] == [pushed.id]
        admin.close()


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
