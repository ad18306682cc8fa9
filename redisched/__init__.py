"""redisched: OpenKAT's scheduler, rebuilt on Redis sorted sets and Lua scripts."""

__version__ = "0.1.0"
