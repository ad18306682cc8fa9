"""Scenario 6: Redis stops answering for a while (SIGSTOP, then DEBUG SLEEP) under HTTP load.
The API answers every request within its Redis timeout (5 s) plus a margin: a success, or a
503 with ``Retry-After``; never a 500 and never a hang. When Redis answers again it recovers
at once. A pop that timed out may still have happened in Redis: that task is leased to nobody,
and comes back after its lease."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.faults.audit import audit, report
from tests.faults.background import Background
from tests.faults.common import log
from tests.faults.load import DirectRunner, HttpRunner, Ledger, Load
from tests.faults.servers import ApiProcess, RestartableRedis

pytestmark = pytest.mark.timeout(90, method="thread")

LEASE_S = 2
STALL_S = 7  # longer than the API's Redis timeout (redisched.app.REDIS_SOCKET_TIMEOUT = 5 s)
ANSWER_WITHIN = 7.5


def recovered_after(http: HttpRunner, ledger: Ledger, since: float, limit: float = 10) -> float:
    """Seconds from ``since`` until a push answers 201 again."""
    while time.monotonic() < since + limit:
        task_id = str(uuid.uuid4())
        if http.push(task_id) == "ok":
            ledger.pushed[task_id] = time.monotonic()
            return time.monotonic() - since
        ledger.push_uncertain.add(task_id)
        time.sleep(0.05)
    raise AssertionError(f"the API did not recover within {limit} s")


@pytest.fixture
def debuggable_redis():
    with RestartableRedis("--enable-debug-command", "local") as server:
        yield server


def test_redis_not_answering_gives_503_with_retry_after_and_recovers(debuggable_redis, dsn, prefix):
    server = debuggable_redis
    ledger = Ledger()
    direct = DirectRunner(server.url, prefix, ledger, lease_ms=LEASE_S * 1000)
    api = ApiProcess(server.url, dsn, prefix, lease_s=LEASE_S)
    http = HttpRunner(api.url, ledger, answer_within=ANSWER_WITHIN)
    probe = HttpRunner(api.url, Ledger(), answer_within=ANSWER_WITHIN)
    with Background(server.url, dsn, prefix, lease_ms=LEASE_S * 1000) as background:
        try:
            api.start()
            for _ in range(200):
                task_id = str(uuid.uuid4())
                assert direct.push(task_id) == "ok"
                ledger.pushed[task_id] = time.monotonic()
            load = Load(ledger, http.push, http.pop_and_complete, pushers=2, poppers=4, push_rate=100, max_seconds=50)
            load.start()
            recoveries = []
            try:
                time.sleep(1.5)
                fault_start = time.monotonic()
                server.signal(signal.SIGSTOP)
                time.sleep(STALL_S)
                server.signal(signal.SIGCONT)
                recoveries.append(recovered_after(probe, ledger, time.monotonic()))
                time.sleep(1.5)
                # The same, with the server busy rather than gone: DEBUG SLEEP blocks it.
                slept = []
                once = redis.Redis.from_url(server.url, socket_timeout=STALL_S + 10, retry=Retry(NoBackoff(), 0))
                sleeper = threading.Thread(target=lambda: slept.append(once.execute_command("DEBUG", "SLEEP", STALL_S)))
                sleeper.start()
                sleeper.join(STALL_S + 5)
                assert slept, "DEBUG SLEEP failed"
                recoveries.append(recovered_after(probe, ledger, time.monotonic()))
                fault_end = time.monotonic()
                time.sleep(LEASE_S + 2)  # pops that happened after their 503 come back and are done
            finally:
                load.stop()
            result = audit("redis not answering", ledger, background, server.url, dsn, prefix)
        finally:
            api.close()
            http.close()
            probe.close()
            direct.close()
    unavailable = ledger.http_status.get(503, 0)
    result.extra.update(answered_503=unavailable, answered_500=ledger.http_status.get(500, 0),
                        recovered_after_s=[round(r, 2) for r in recoveries], reaped=background.reaped)  # fmt: skip
    report(result, ledger, fault_start, fault_end, 2)
    for bad in ledger.bad_answers[:10]:
        log(f"[faults] redis not answering: bad answer: {bad}")
    assert unavailable > 0, "no request met the stalled Redis"
    assert not ledger.bad_answers, f"{len(ledger.bad_answers)} bad answers, e.g. {ledger.bad_answers[:3]}"
    assert all(r < 2 for r in recoveries), f"slow recovery: {recoveries}"
    result.check()

