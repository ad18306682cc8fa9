"""Both embedded servers together, and ``ensure_servers``: the URLs a run uses, embedded or not."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from redisched.embedded.postgres import EmbeddedPostgres
from redisched.embedded.shared import DEFAULT_DATABASE, _Embedded, _State
from redisched.embedded.valkey import EmbeddedValkey



log = logging.getLogger("redisched.embedded")


class EmbeddedServers:
    """The embedded Valkey and/or Postgres of one data folder.

    ``start()`` launches (or attaches to) both concurrently and is idempotent; ``stop()``
    stops Postgres and Valkey (if no other process is attached), is idempotent, and is also
    registered with atexit. Usable as a context manager.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        redis: bool = True,
        postgres: bool = True,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        state = _State(self.data_dir)
        self.valkey = EmbeddedValkey(self.data_dir, state=state) if redis else None
        self.postgres = EmbeddedPostgres(self.data_dir, database=database, state=state) if postgres else None
        self.timings: dict[str, float] = {}

    @property
    def redis_url(self) -> str | None:
        return self.valkey.url if self.valkey is not None else None

    @property
    def db_dsn(self) -> str | None:
        return self.postgres.url if self.postgres is not None else None

    def _servers(self) -> list[_Embedded]:
        return [s for s in (self.valkey, self.postgres) if s is not None]

    def start(self) -> EmbeddedServers:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        servers = self._servers()

        def timed(server: _Embedded) -> None:
            t0 = time.perf_counter()
            server.start()
            self.timings[f"{server.name}_start"] = time.perf_counter() - t0

        with ThreadPoolExecutor(max_workers=max(1, len(servers)), thread_name_prefix="embedded") as pool:
            futures = [pool.submit(timed, s) for s in servers]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            self.stop()
            raise failed[0]
        return self

    def stop(self) -> None:
        # Postgres first: a snapshotter draining Redis into it has finished by now.
        for server in reversed(self._servers()):
            t0 = time.perf_counter()
            try:
                server.stop()
            except Exception:  # stop the other one regardless
                log.exception("stopping embedded %s failed", server.name)
            self.timings[f"{server.name}_stop"] = time.perf_counter() - t0

    def __enter__(self) -> EmbeddedServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_servers(settings: Any) -> tuple[str, str, EmbeddedServers | None]:
    """(redis_url, db_dsn, servers): configured URLs as they are, embedded ones for the rest.

    ``servers`` is None when both URLs are configured; otherwise the caller owns it and
    calls ``servers.stop()`` on shutdown (an atexit hook does it otherwise). Blocking, ~0.1 s
    for Valkey and ~1 s for Postgres (a few seconds the first time: initdb); from async
    code, ``await asyncio.to_thread(ensure_servers, settings)``.
    """
    redis_url: str | None = getattr(settings, "redis_url", None)
    db_dsn: str | None = getattr(settings, "db_uri", None)
    if redis_url and db_dsn:
        return redis_url, db_dsn, None
    servers = EmbeddedServers(settings.data_dir, redis=not redis_url, postgres=not db_dsn).start()
    return redis_url or servers.redis_url, db_dsn or servers.db_dsn, servers  # type: ignore[return-value]
