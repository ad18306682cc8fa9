"""The boefjes the new-boefje sweep has already handled, per organisation, kept in Redis so a
restart does not sweep every object again (mula keeps them in memory: minvws/nl-kat-coordination#4191).

One set per organisation, ``<prefix>:scheduler:boefjes-seen:<org>``. A boefje is claimed by
SADD, so of several workers exactly one sweeps it. A boefje that is disabled leaves the set
and is swept again when it comes back, as in mula.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from redisched.queue.keys import boefjes_seen_key


class SeenBoefjes:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, organisation: str) -> str:
        return boefjes_seen_key(self.prefix, organisation)

    async def claim_new(self, organisation: str, enabled: Iterable[str]) -> list[str]:
        """Of the enabled boefjes, those not seen before, now marked seen; the ones seen before
        and no longer enabled are forgotten."""
        enabled = list(dict.fromkeys(enabled))
        key = self.key(organisation)
        async with self.redis.pipeline(transaction=False) as pipe:
            for boefje_id in enabled:
                pipe.sadd(key, boefje_id)
            pipe.smembers(key)
            *added, members = await pipe.execute()
        gone = {member.decode() for member in members} - set(enabled)
        if gone:
            await self.redis.srem(key, *gone)
        return [boefje_id for boefje_id, was_added in zip(enabled, added) if was_added]

    async def forget(self, organisation: str, boefje_id: str) -> None:
        """Unmark a boefje whose sweep failed, so the next round sweeps it again."""
        await self.redis.srem(self.key(organisation), boefje_id)
