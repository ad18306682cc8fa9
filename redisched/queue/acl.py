"""A Redis ACL user for the direct client: redisched's keys and the commands its scripts and
reads need, nothing else (no FLUSHALL, no KEYS, no SCRIPT or FUNCTION, no other application's
keys, none of the snapshotter's stream commands).

    ACL SETUSER <name> <rules...>        (rules from ``acl_rules``)

The trust boundary that remains: Redis checks the commands a script calls against its
caller's ACL, so the user also holds the plain commands the scripts call (HSET, ZADD, XADD,
...) on redisched's keys, and could send them raw; and it holds EVAL, so it can run Lua of
its own (a loop that stalls Redis until busy-reply-threshold, then BUSY for everyone). What
the scripts meet from raw writes (a record that does not decode, a member naming no live
task) they move aside and go on (lua/includes/common.lua); a well-formed forgery they take
as real. Give the user to components you trust.
"""

from __future__ import annotations

# Commands the scripts the direct client runs (push, pop, peek, patch, extend, requeue) call;
# the snapshotter's (ack: XACK, XPENDING, XINFO, XTRIM) are left out.
SCRIPT_COMMANDS = (
    "time", "hget", "hmget", "hset", "hsetnx", "hdel", "hexists", "hincrby",
    "zadd", "zrem", "zrange", "zcard", "zscore", "xadd",
)  # fmt: skip
# Commands the client sends itself: scripts, and the O(1) reads (qsize, get, locate).
CLIENT_COMMANDS = ("evalsha", "eval", "ping", "zcard", "hget", "hexists")


def acl_rules(password: str, prefix: str = "rs") -> list[str]:
    """The ACL SETUSER rules for a direct-client user limited to keys under ``prefix``."""
    commands = sorted(set(SCRIPT_COMMANDS) | set(CLIENT_COMMANDS))
    return ["reset", "on", f">{password}", f"~{prefix}:*", "resetchannels", "-@all", *(f"+{c}" for c in commands)]
