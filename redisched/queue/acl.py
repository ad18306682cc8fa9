"""A Redis ACL user for the direct client: redisched's keys and the commands its scripts and
reads need, nothing else (no FLUSHALL, no KEYS, no other application's keys).

    ACL SETUSER <name> <rules...>        (rules from ``acl_rules``)
"""

from __future__ import annotations

# Commands the Lua scripts call: Redis checks them against the caller's ACL too.
SCRIPT_COMMANDS = (
    "time", "hget", "hset", "hsetnx", "hdel", "hexists", "hincrby",
    "zadd", "zrem", "zrange", "zcard", "zscore",
    "xadd", "xack", "xpending", "xinfo|groups", "xtrim",
)  # fmt: skip
# Commands the client sends itself: scripts, and the O(1) reads (qsize, get, locate).
CLIENT_COMMANDS = ("evalsha", "eval", "ping", "zcard", "hget", "hexists")


def acl_rules(password: str, prefix: str = "rs") -> list[str]:
    """The ACL SETUSER rules for a direct-client user limited to keys under ``prefix``."""
    commands = sorted(set(SCRIPT_COMMANDS) | set(CLIENT_COMMANDS))
    return ["reset", "on", f">{password}", f"~{prefix}:*", "resetchannels", "-@all", *(f"+{c}" for c in commands)]
