"""Cross-site requests against a real ``redisched api`` with auth off (the default): a web page
an operator opens cannot push, pop or schedule (no JSON body it may send without a CORS
preflight, no state change from another Origin), while OpenKAT's own clients, which send no
Origin and sometimes no Content-Type, work as before."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.acceptance.harness import boefje_push
from tests.integration.http_server import api_process, backends, template_db  # noqa: F401

EVIL = "https://evil.example"
PUSH = "/schedulers/boefje/push"


ALLOWED = "https://kat.example"


@pytest.fixture(scope="module")
def server(backends):  # noqa: F811
    with api_process(backends, REDISCHED_ALLOWED_ORIGINS=f'["{ALLOWED}"]') as server:
        yield server


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def _queued(client: httpx.Client) -> int:
    return client.get("/schedulers/boefje").json()["qsize"]


def _body(name: str) -> str:
    return json.dumps(boefje_push(f"Hostname|internet|{name}.example"))


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("text/plain", None),  # the JSON text itself, as text: no preflight
        ("text/plain;charset=UTF-8", None),
        ("application/x-www-form-urlencoded", "organisation=o&priority=1"),
        ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n{}\r\n--x--\r\n'),
        ("application/jsonx", None),
        ("text/json", None),
    ],
)
def test_a_body_that_is_not_declared_json_is_refused_and_changes_nothing(client, content_type, body):
    before = _queued(client)
    response = client.post(PUSH, content=body or _body(f"ct-{len(content_type)}"), headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Unsupported media type: ")
    assert _queued(client) == before


def test_a_schedule_and_a_pop_sent_as_text_are_refused(client):
    assert client.post(PUSH, content=_body("queued-for-pop")).status_code == 201  # no Content-Type: the runner's push
    queued, schedules = _queued(client), client.get("/schedules").json()["count"]
    schedule = {"scheduler_id": "boefje", "organisation": "o", "schedule": "* * * * *", "data": {}}
    assert client.post("/schedules", content=json.dumps(schedule), headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/schedulers/boefje/pop", content="", headers={"content-type": "text/plain"}).status_code == 415
    assert _queued(client) == queued
    assert client.get("/schedules").json()["count"] == schedules


def test_a_state_change_from_another_origin_is_refused(client):
    before = _queued(client)
    for origin in (EVIL, "null", f"http://127.0.0.1:{client.base_url.port + 1}", "http://localhost:" + str(client.base_url.port)):
        response = client.post(PUSH, json=boefje_push("Hostname|internet|evil.example"), headers={"origin": origin})
        assert response.status_code == 403, origin
        assert response.json()["detail"].startswith("Cross-site request refused")
    assert client.post("/schedulers/boefje/pop", headers={"origin": EVIL}).status_code == 403
    assert client.request("DELETE", "/schedules/00000000-0000-4000-8000-000000000000", headers={"origin": EVIL}).status_code == 403
    assert _queued(client) == before


def test_sec_fetch_site_cross_site_is_refused_even_without_origin(client):
    before = _queued(client)
    response = client.post(PUSH, json=boefje_push("Hostname|internet|fetch.example"), headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert _queued(client) == before


def test_same_origin_and_no_origin_are_served(client, server):
    same = client.post(PUSH, json=boefje_push("Hostname|internet|same.example"),
                       headers={"origin": server.url, "sec-fetch-site": "same-origin"})  # fmt: skip
    assert same.status_code == 201
    charset = client.post(PUSH, content=_body("charset"), headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 201
    assert client.post(PUSH, json=boefje_push("Hostname|internet|plain.example")).status_code == 201
    # Reads are not state changes: a cross-site GET is answered (no CORS header lets a page read it).
    read = client.get("/schedulers", headers={"origin": EVIL, "sec-fetch-site": "cross-site"})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_the_openkat_clients_bodiless_and_undeclared_calls_are_served(client):
    """The boefje runner pushes with ``content=`` (no Content-Type) and pops with ``json=None``
    (no body); the web UI lists tasks with ``json=None`` (scheduler_client.py, rocky/scheduler.py)."""
    pushed = client.post(PUSH, content=_body("runner"))
    assert pushed.status_code == 201 and "content-type" not in pushed.request.headers
    popped = client.post("/schedulers/boefje/pop", params={"limit": 1}, json=None)
    assert popped.status_code == 200 and "content-type" not in popped.request.headers
    assert len(popped.json()["results"]) == 1
    assert client.post("/tasks", params={"limit": 1}, json=None).status_code == 200
    assert client.post("/schedulers/normalizer/pop?limit=1").json() == {"results": []}


def test_two_authorization_headers_are_a_400(client):
    headers = [("authorization", "Bearer a"), ("authorization", "Bearer b")]
    response = client.get("/schedulers", headers=headers)
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request error occurred: more than one Authorization header"}


def test_an_allowed_origin_may_change_state(client):
    body = boefje_push("Hostname|internet|allowed.example")
    assert client.post(PUSH, json=body, headers={"origin": ALLOWED, "sec-fetch-site": "cross-site"}).status_code == 201
    assert client.post(PUSH, json=body, headers={"origin": ALLOWED + ":8443"}).status_code == 403
