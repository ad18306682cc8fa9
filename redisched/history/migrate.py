"""Schema migrations: the numbered ``migrations/*.sql`` files, applied in order, once.

Each file runs in its own transaction together with its row in ``schema_migrations``, and
the whole run holds a session advisory lock, so concurrent starts apply each file once.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

# pg_advisory_lock key: "redischd" as a 64-bit integer.
MIGRATION_LOCK = int.from_bytes(b"redischd", "big")


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) for every migration file, in version order."""
    folder = resources.files("redisched.history") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not applied yet; returns the versions applied by this call."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        try:
            return await _apply_pending(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


async def _apply_pending(conn: psycopg.AsyncConnection) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    cursor = await conn.execute("SELECT version FROM schema_migrations")
    done = {version for (version,) in await cursor.fetchall()}
    applied = []
    for version, statements in migration_files():
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(statements)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [version])
        log.info("applied migration %s", version)
        applied.append(version)
    return applied
