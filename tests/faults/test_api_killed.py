"""Scenario 2: an API process is kill -9'd while pops are in flight over HTTP, and another one
starts on the same port. A pop whose answer was lost with the process leaves its task leased to
nobody: the lease expires and the task is handed out again. Nothing is lost, nothing is
completed twice."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.faults.audit import audit, report
from tests.faults.background import Background
from tests.faults.load import DirectRunner, HttpRunner, Ledger, Load
from tests.faults.servers import ApiProcess

pytestmark = pytest.mark.timeout(90, method="thread")

LEASE_S = 2


def test_api_killed_mid_pop_loses_nothing(private_redis_server, dsn, prefix):
    redis_url = private_redis_server.url
    ledger = Ledger()
    direct = DirectRunner(redis_url, prefix, ledger, lease_ms=LEASE_S * 1000)
    api = ApiProcess(redis_url, dsn, prefix, lease_s=LEASE_S)
    apis = [api]
    http = HttpRunner(api.url, ledger)
    with Background(redis_url, dsn, prefix, lease_ms=LEASE_S * 1000) as background:
        try:
            api.start()
            for _ in range(300):
                task_id = str(uuid.uuid4())
                assert direct.push(task_id) == "ok"
                ledger.pushed[task_id] = time.monotonic()
            # Pushes with the direct client, pops and completions over HTTP.
            load = Load(ledger, direct.push, http.pop_and_complete, pushers=1, poppers=6, push_rate=150, max_seconds=45)
            load.start()
            try:
                time.sleep(1.5)
                fault_start = time.monotonic()
                faults, in_flight_at_kill = 0, []
                for _ in range(2):
                    in_flight_at_kill.append(http.in_request)
                    apis[-1].kill()
                    faults += 1
                    time.sleep(0.5)  # clients meet a dead port
                    apis.append(ApiProcess(redis_url, dsn, prefix, port=api.port, lease_s=LEASE_S).start())
                    time.sleep(2.0)
                fault_end = time.monotonic()
                time.sleep(LEASE_S + 1.5)  # pops lost with the process are redelivered and done
            finally:
                load.stop()
            result = audit("api kill -9", ledger, background, redis_url, dsn, prefix)
        finally:
            for each in apis:
                each.close()
            http.close()
            direct.close()
    lost_answers = sum(n for what, n in ledger.errors.items() if what.startswith("pop ") and "Error" in what)
    result.extra.update(in_flight_at_kill=in_flight_at_kill, pop_calls_failed=lost_answers, reaped=background.reaped)
    report(result, ledger, fault_start, fault_end, faults)
    assert sum(in_flight_at_kill) > 0, "no request was in flight when the API died"
    assert ledger.ops_between(fault_start, fault_end, "complete") > 0, "the load stalled"
    assert not ledger.bad_answers, ledger.bad_answers[:5]
    result.check()
