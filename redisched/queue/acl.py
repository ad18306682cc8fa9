"""A Redis ACL user for the direct client: it runs redisched's functions (FCALL, FCALL_RO)
on redisched's keys and sends the few reads the client makes, nothing else: no EVAL, EVALSHA,
SCRIPT or FUNCTION (so no Lua of its own, no busy loop it could start, no library it could
replace), no FLUSHALL, no KEYS, no other application's keys, none of the snapshotter's
stream commands. The service's own connection loads the functions (queue/scripts.py).

    ACL SETUSER <name> <rules...>        (rules from ``acl_rules``)

The trust boundary that remains: Redis checks the commands a function calls against its
caller's ACL, so the user also holds the plain commands the functions call (HSET, ZADD, XADD,
...) on redisched's keys, and could send them raw. What the functions meet from raw writes
(a record that does not decode, a member naming no live task) they move aside and go on
(lua/includes/common.lua); a well-formed forgery they take as real. Give the user to
components you trust not to forge.
"""

from __future__ import annotations

# Commands the functions the direct client runs (push, pop, peek, patch, extend, requeue) call;
# the snapshotter's (ack: XACK, XPENDING, XINFO, XTRIM) are left out.
SCRIPT_COMMANDS = (
    "time", "hget", "hmget", "hset", "hsetnx", "hdel", "hexists", "hincrby", "hlen", "hgetall",
    "zadd", "zrem", "zrange", "zcard", "zscore", "xadd",
)  # fmt: skip
# Commands the client sends itself: the functions, and the O(1) reads (qsize, get, locate).
CLIENT_COMMANDS = ("fcall", "fcall_ro", "ping", "zcard", "hget", "hexists")


def acl_rules(password: str, prefix: str = "rs") -> list[str]:
    """The ACL SETUSER rules for a direct-client user limited to keys under ``prefix``."""
    commands = sorted(set(SCRIPT_COMMANDS) | set(CLIENT_COMMANDS))
    return ["reset", "on", f">{password}", f"~{prefix}:*", "resetchannels", "-@all", *(f"+{c}" for c in commands)]
