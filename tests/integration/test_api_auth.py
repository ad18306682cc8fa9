"""Bearer tokens: off by default (mula has none); when set, only ``/health`` is open, runners
reach what the runners call, admins everything."""

from __future__ import annotations

import logging

import pytest

from tests.acceptance.harness import api_client, boefje_push, db_dsn, settings, template_db  # noqa: F401

ADMIN, RUNNER = {"authorization": "Bearer admin-secret"}, {"authorization": "Bearer runner-secret"}


@pytest.fixture
async def guarded(settings):
    tokens = {"admin_tokens": ["admin-secret"], "runner_tokens": ["runner-secret"]}
    async with api_client(settings.model_copy(update=tokens)) as client:
        yield client


async def test_without_a_token_only_health_answers(guarded):
    assert (await guarded.get("/health")).status_code == 200
    for method, path in (("GET", "/"), ("GET", "/schedulers"), ("POST", "/schedulers/boefje/pop"), ("GET", "/metrics"),
                         ("GET", "/openapi.json"), ("GET", "/tasks")):  # fmt: skip
        response = await guarded.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "Not authenticated"}


async def test_a_wrong_token_is_401(guarded):
    response = await guarded.get("/schedulers", headers={"authorization": "Bearer nope"})
    assert response.status_code == 401
    assert (await guarded.get("/schedulers", headers={"authorization": "Basic admin-secret"})).status_code == 401


async def test_runner_pops_gets_and_patches_status_only(guarded):
    pushed = (await guarded.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|a.example"), headers=ADMIN)).json()
    assert (await guarded.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|b.example"), headers=RUNNER)).status_code == 403
    [task] = (await guarded.post("/schedulers/boefje/pop", headers=RUNNER)).json()["results"]
    assert task["id"] == pushed["id"]
    assert (await guarded.get(f"/tasks/{task['id']}", headers=RUNNER)).status_code == 200
    assert (await guarded.patch(f"/tasks/{task['id']}", json={"status": "running"}, headers=RUNNER)).status_code == 200
    forbidden = await guarded.patch(f"/tasks/{task['id']}", json={"priority": 1}, headers=RUNNER)
    assert forbidden.status_code == 403 and forbidden.json() == {"detail": "Not enough permissions"}
    assert (await guarded.get("/tasks", headers=RUNNER)).status_code == 403
    assert (await guarded.get("/tasks", headers=ADMIN)).status_code == 200


async def test_auth_off_is_logged_loudly(settings, caplog):
    with caplog.at_level(logging.WARNING):
        async with api_client(settings):
            pass
    assert any("AUTH IS OFF" in record.message for record in caplog.records)


async def test_the_quarantine_is_for_admins(guarded):
    for method, path in (("GET", "/history/quarantine"), ("POST", "/history/quarantine/retry")):
        assert (await guarded.request(method, path)).status_code == 401
        assert (await guarded.request(method, path, headers=RUNNER)).status_code == 403
        assert (await guarded.request(method, path, headers=ADMIN)).status_code == 200
