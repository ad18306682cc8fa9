"""Scenario 4: Postgres (a private embedded one) is stopped for 30 s under load and started
again. Pushes and pops go on the whole time (no Postgres on their path); the events wait in
Redis, and once Postgres is back the snapshotter drains them: Postgres matches Redis."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from redisched.embedded import EmbeddedPostgres
from redisched.history.migrate import migrate
from tests.faults.audit import audit, report
from tests.faults.background import Background
from tests.faults.common import log
from tests.faults.load import DirectRunner, Ledger, Load

pytestmark = pytest.mark.timeout(150, method="thread")

LEASE_MS = 2000
OUTAGE_S = 30


@pytest.fixture
def embedded_postgres():
    # Postgres runs as a system user when we are root: its folder must be reachable by it.
    base = Path(tempfile.mkdtemp(prefix="redisched-faults-pg-"))
    base.chmod(0o711)
    server = EmbeddedPostgres(base / "data", database="faults")
    try:
        dsn = server.start()
        asyncio.run(migrate(dsn))
        yield server, dsn
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_down_for_30_s_under_load(private_redis_server, embedded_postgres, prefix):
    server, dsn = embedded_postgres
    redis_url = private_redis_server.url
    ledger = Ledger()
    runner = DirectRunner(redis_url, prefix, ledger, lease_ms=LEASE_MS)
    with Background(redis_url, dsn, prefix, lease_ms=LEASE_MS) as background:
        for _ in range(300):
            task_id = str(uuid.uuid4())
            assert runner.push(task_id) == "ok"
            ledger.pushed[task_id] = time.monotonic()
        load = Load(ledger, runner.push, runner.pop_and_complete, push_rate=150, pop_rate=140, max_seconds=OUTAGE_S + 40).start()
        try:
            time.sleep(1.5)
            fault_start = time.monotonic()
            server.stop()
            time.sleep(OUTAGE_S)
            backlog = private_redis_server.client().xlen(f"{prefix}:{{boefje}}:events")
            fault_end = time.monotonic()
            assert server.start() == dsn, "Postgres came back elsewhere"
            back = time.monotonic()
            meta = private_redis_server.client()
            applied = meta.hget(f"{prefix}:{{boefje}}:meta", "applied")
            while meta.hget(f"{prefix}:{{boefje}}:meta", "applied") == applied and time.monotonic() < back + 30:
                time.sleep(0.05)
            resumed_s = time.monotonic() - back
        finally:
            load.stop()
        started = time.monotonic()
        result = audit(f"postgres down {OUTAGE_S} s", ledger, background, redis_url, dsn, prefix)
        drain_s = time.monotonic() - started
    runner.close()
    pushes = ledger.per_second(fault_start, fault_end, "push")
    pops = ledger.per_second(fault_start, fault_end, "pop")
    result.extra.update(events_waiting=backlog, snapshotter_resumed_after_s=round(resumed_s, 1), drain_s=round(drain_s, 1), min_pushes_per_s=min(pushes), min_pops_per_s=min(pops))
    report(result, ledger, fault_start, fault_end, 1)
    log(f"[faults] postgres down: pushes/s during the outage {pushes}")
    log(f"[faults] postgres down: pops/s during the outage {pops}")
    assert min(pushes) > 0 and min(pops) > 0, "pushes or pops stopped while Postgres was down"
    assert backlog > 1000, "the events did not wait in Redis"
    result.check()
    # Postgres is back: the history must follow within seconds, not after the pool's
    # reconnection backoff (which doubles, uncapped, for as long as the outage lasted).
    assert resumed_s <= 5, f"the snapshotter resumed {resumed_s:.1f} s after Postgres was back"
