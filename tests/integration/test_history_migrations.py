"""Schema migrations: applied once, in order, whoever else is migrating at the same time."""

from __future__ import annotations

import asyncio
import psycopg
import pytest

from redisched.history.migrate import migrate, migration_files
from tests.support.databases import throwaway_database


@pytest.fixture
def empty_dsn(pg_dsn):
    """A database of its own: these tests watch the schema appear."""
    with throwaway_database(pg_dsn, "redisched_migrate") as dsn:
        yield dsn


async def applied_versions(dsn: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [version for (version,) in await cursor.fetchall()]


def test_migration_files_are_numbered_in_order():
    versions = [version for version, _ in migration_files()]
    assert versions[0] == "0001_initial"
    assert versions == sorted(versions)


async def test_migrate_applies_every_file_once(empty_dsn):
    all_versions = [version for version, _ in migration_files()]

    assert await migrate(empty_dsn) == all_versions
    assert await migrate(empty_dsn) == []
    assert await applied_versions(empty_dsn) == all_versions


async def test_concurrent_migrations_apply_each_file_once(empty_dsn):
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(4)))

    assert sorted(map(len, results)) == [0, 0, 0, len(migration_files())]
    assert len(await applied_versions(empty_dsn)) == len(migration_files())
