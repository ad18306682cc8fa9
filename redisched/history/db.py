"""Postgres plumbing shared by the stores: the pool, named queries and WHERE clauses."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

_QUERY_NAME = re.compile(r"^-- name: (\w+)\n", re.MULTILINE)


@cache
def queries(filename: str) -> dict[str, str]:
    """The named queries of a ``.sql`` file next to this module: each starts with a
    ``-- name: <name>`` line, then comment lines describing it, and runs to the next one
    (procrastinate's queries.sql trick). The description is not sent."""
    text = (resources.files("redisched.history") / filename).read_text()
    parts = _QUERY_NAME.split(text)[1:]
    return {name: _without_description(body) for name, body in zip(parts[::2], parts[1::2])}


def _without_description(body: str) -> str:
    lines = body.strip().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines)


def _session_setup(statement_timeout_ms: int):
    async def configure(conn: AsyncConnection) -> None:
        # UTC: datetimes come back as UTC. No JIT: it costs more than it saves on short queries.
        # A statement past the timeout is cancelled (QueryCanceled: the API answers 503); the
        # snapshotter's own transactions lift it (SET LOCAL), as a batch must not be cut short.
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute("SET jit = off")
        await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms))))
        await conn.commit()

    return configure


RECONNECT_GIVE_UP_SECONDS = 4.0


async def open_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0, statement_timeout_ms: int = 0
) -> AsyncConnectionPool:
    """A pool of sessions in UTC, each statement cut off after ``statement_timeout_ms`` (0: never). Opens without waiting:
    a Postgres that is down is retried in the background, callers time out after ``timeout``.
    The pool's reconnect backoff doubles without bound; giving up after a few seconds makes the
    next caller start a fresh attempt (1 s), so the history resumes soon after an outage."""
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
        configure=_session_setup(statement_timeout_ms),
        open=False,
    )
    await pool.open(wait=False)
    return pool


class Where:
    """An AND of conditions with their positional parameters, for dynamic listings."""

    def __init__(self) -> None:
        self.conditions: list[sql.Composable] = []
        self.params: list[Any] = []

    def add(self, condition: str | sql.Composable, *params: Any) -> None:
        self.conditions.append(sql.SQL(condition) if isinstance(condition, str) else condition)
        self.params.extend(params)

    def equal(self, column: str, value: Any) -> None:
        """``column = value`` unless value is None (not filtered)."""
        if value is not None:
            self.add(sql.SQL("{} = %s").format(sql.Identifier(column)), value)

    def between(self, column: str, low: Any, high: Any) -> None:
        """Inclusive bounds; a None bound is open."""
        if low is not None:
            self.add(sql.SQL("{} >= %s").format(sql.Identifier(column)), low)
        if high is not None:
            self.add(sql.SQL("{} <= %s").format(sql.Identifier(column)), high)

    def filter(self, node: Any, target: str) -> None:
        """The FilterRequest tree ``node`` (None: no filter), compiled for table ``target``."""
        if node is not None:
            from redisched.filters import to_sql

            condition, params = to_sql(node, target)
            self.add(sql.SQL("({})").format(condition), *params)

    def clause(self) -> sql.Composable:
        if not self.conditions:
            return sql.SQL("")
        return sql.SQL("WHERE ") + sql.SQL(" AND ").join(self.conditions)
