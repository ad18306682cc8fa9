"""schemathesis over ``/openapi.json``: for every documented operation, requests generated from
the document, valid ones and invalid ones, never get a 5xx or hang, and are answered with a
documented status, content type, headers and body schema.

The document is read through the app's own ``/openapi.json`` route. The requests go to the
ASGI app in this process (the ``api`` fixture: real Redis under a private key prefix, a fresh
Postgres database, the snapshotter and lease reaper running), on the tests' event loop; a task
in each queue is there before the first request. Reproducible: a fixed number of examples,
derandomized, no example database.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from redisched.config import Settings
from redisched.server.app import api_app
from tests.acceptance.harness import api, boefje_push, db_dsn, normalizer_push, report_push, settings, template_db  # noqa: F401

SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", api_app(Settings(admin_tokens=[], runner_tokens=[])))
OPERATIONS = {operation.label: operation for operation in (result.ok() for result in SCHEMA.get_all_operations())}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]  # fmt: skip
EXAMPLES = 20  # per operation, valid and invalid requests together: the file runs in 35-45 s on 2 cores
REQUEST_TIMEOUT_SECONDS = 10.0  # an answer slower than this is a hang (no route waits more than ~1 s)
LONG_POLL_CAP_SECONDS = 0.05  # pop's ?wait= may rightly block for 30 s on an empty queue

FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # REQUEST_TIMEOUT_SECONDS bounds each request instead, with a clearer failure
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _modes(label: str) -> list[GenerationMode]:
    """Invalid requests too where there is something to get wrong: parameters or a body."""
    raw = OPERATIONS[label].definition.raw
    return list(GenerationMode) if raw.get("parameters") or "requestBody" in raw else [GenerationMode.POSITIVE]


CASES: dict[str, SearchStrategy[Case]] = {
    label: st.one_of([operation.as_strategy(generation_mode=mode) for mode in _modes(label)])
    for label, operation in OPERATIONS.items()
}


@pytest.fixture
async def seeded(api):
    """The app with a task in each queue, so pops and listings have something to answer."""
    for scheduler_id, body in [("boefje", boefje_push("Hostname|internet|example.com")),
                               ("normalizer", normalizer_push()), ("report", report_push())]:  # fmt: skip
        assert (await api.post(f"/schedulers/{scheduler_id}/push", json=body)).status_code == 201
    return api


@pytest.mark.parametrize("label", CASES)
@FUZZ
@given(data=st.data())
async def test_every_operation_answers_as_documented(seeded, label, data):
    case = data.draw(CASES[label], label="case")
    _cap_long_poll(case)
    try:
        response = await asyncio.wait_for(seeded.request(**_httpx_request(case)), REQUEST_TIMEOUT_SECONDS)
    except TimeoutError:
        pytest.fail(f"no answer within {REQUEST_TIMEOUT_SECONDS} s: {case.as_curl_command()}")
    case.validate_response(response, checks=CHECKS)


def _cap_long_poll(case: Case) -> None:
    """Cap pop's ``?wait=`` wherever the server would read a number above the cap (it reads
    with ``float``, for which " 5 " and "1_0" are numbers too)."""
    if not isinstance(case.query, dict) or "wait" not in case.query:
        return
    try:
        wait = float(case.query["wait"])
    except (TypeError, ValueError):
        return
    if math.isfinite(wait) and wait > LONG_POLL_CAP_SECONDS:
        case.query["wait"] = LONG_POLL_CAP_SECONDS


def _httpx_request(case: Case) -> dict[str, Any]:
    """The case as ``httpx.AsyncClient.request`` arguments (schemathesis serialises it for
    ``requests``)."""
    sent = case.as_transport_kwargs(base_url="http://testserver")
    request = {name: sent[name] for name in ("method", "url", "headers", "params")}
    if sent.get("cookies"):
        request["cookies"] = sent["cookies"]
    if "json" in sent:
        request["json"] = sent["json"]
    elif "data" in sent:
        body = sent["data"]
        request["content" if isinstance(body, (bytes, str)) else "data"] = body
    return request


# --- 500s found while writing this: by schemathesis, then around what it found -------------


@pytest.mark.parametrize(("method", "url", "status"), [
    ("GET", f"/tasks?limit={2**63}", 200),  # past Postgres' bigint: "bigint out of range"
    ("GET", f"/tasks?offset={10**30}", 200),
    ("GET", f"/schedules?limit={2**64}&offset={2**63}", 200),
    ("POST", f"/schedules/search?limit={2**63}", 200),
    ("GET", "/tasks/stats?organisation_id=a%00b", 400),  # Postgres text holds no NUL
    ("GET", "/tasks?organisation=%00", 400),
    ("GET", "/schedules?schedule_hash=a%00", 400),
])  # fmt: skip
async def test_huge_pages_and_nul_in_queries_are_answered(api, method, url, status):
    response = await api.request(method, url, json={"filters": []} if method == "POST" else None)
    assert response.status_code == status, response.text


async def test_lease_lengths_and_dates_out_of_range_are_answered(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|example.com"))
    popped = await api.post("/schedulers/boefje/pop")
    task_id, token = popped.json()["results"][0]["id"], popped.headers["X-Lease-Token"]
    for seconds in ("inf", "nan", "1e12", "1e17", "1e306"):  # int(inf); past year 9999; Lua's overflow; inf once in ms
        response = await api.post(f"/tasks/{task_id}/lease?seconds={seconds}", headers={"X-Lease-Token": token})
        assert response.status_code == 422, response.text
    assert (await api.post(f"/tasks/{task_id}/lease?seconds=31536000", headers={"X-Lease-Token": token})).status_code == 200
    # In year 10000 once in UTC: refused, not stored to fail every later read of the task.
    response = await api.patch(f"/tasks/{task_id}", json={"created_at": "9999-12-31T23:59:59-01:00"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "created_at"]
    assert (await api.get("/tasks?min_created_at=0001-01-01T00:00:00%2B01:00")).status_code == 422
    # The last microsecond of 9999 read back as microseconds / 1e6 rounded into year 10000.
    last = "9999-12-31T23:59:59.999999Z"
    assert (await api.patch(f"/tasks/{task_id}", json={"created_at": last})).json()["created_at"] == last
    assert (await api.get(f"/tasks/{task_id}")).json()["created_at"] == last
