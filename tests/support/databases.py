"""Throwaway Postgres databases on the local server: created fresh, dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg


def dsn_of(server_dsn: str, name: str) -> str:
    """``server_dsn`` with its database replaced by ``name``."""
    return server_dsn.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def throwaway_database(server_dsn: str, prefix: str, *, template: str | None = None) -> Iterator[str]:
    """A database ``<prefix>_<random>`` (a copy of ``template`` if given) on the server that
    ``server_dsn`` connects to; yields its DSN and drops it afterwards, also on failure."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    create = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(create)
    try:
        yield dsn_of(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
