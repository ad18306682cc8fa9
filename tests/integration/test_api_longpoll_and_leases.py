"""Beyond mula: long-poll pop (``?wait=``) and lease extension with the pop's token."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

from tests.acceptance.harness import api, boefje_push, db_dsn, settings, template_db  # noqa: F401


async def test_a_long_poll_wakes_up_on_a_push(api):
    async def push_later():
        await asyncio.sleep(0.3)
        await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|late.example"))

    started = time.monotonic()
    pusher = asyncio.create_task(push_later())
    response = await api.post("/schedulers/boefje/pop", params={"wait": 10})
    await pusher
    [task] = response.json()["results"]
    assert task["data"]["input_ooi"] == "Hostname|internet|late.example"
    assert 0.25 < time.monotonic() - started < 2.0


async def test_a_long_poll_ignores_pushes_its_filter_does_not_match(api):
    body = {"filters": [{"column": "organisation", "operator": "eq", "value": "org9"}]}

    async def push_later():
        await asyncio.sleep(0.1)
        await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|other.example"))
        await asyncio.sleep(0.2)
        await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|mine.example", org="org9"))

    pusher = asyncio.create_task(push_later())
    [task] = (await api.post("/schedulers/boefje/pop", params={"wait": 10}, json=body)).json()["results"]
    await pusher
    assert task["organisation"] == "org9"


async def test_a_long_poll_gives_up_after_wait(api):
    started = time.monotonic()
    response = await api.post("/schedulers/boefje/pop", params={"wait": 0.5})
    assert response.json() == {"results": []}
    assert 0.45 < time.monotonic() - started < 2.0


async def test_extend_a_lease_with_the_pop_token(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|lease.example"))
    popped = await api.post("/schedulers/boefje/pop")
    token, task_id = popped.headers["x-lease-token"], popped.json()["results"][0]["id"]
    response = await api.post(f"/tasks/{task_id}/lease", params={"seconds": 3600}, headers={"x-lease-token": token})
    assert response.status_code == 200
    expires = datetime.fromisoformat(response.json()["lease_expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(timezone.utc) < timedelta(minutes=61)
    assert (await api.patch(f"/tasks/{task_id}", json={"status": "running"}, headers={"x-lease-token": token})).status_code == 200


async def test_lease_extension_errors(api):
    pushed = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|queued.example"))).json()
    assert (await api.post(f"/tasks/{pushed['id']}/lease", headers={"x-lease-token": "t"})).status_code == 404  # not leased
    await api.post("/schedulers/boefje/pop")
    stale = await api.post(f"/tasks/{pushed['id']}/lease", headers={"x-lease-token": "not-the-token"})
    assert stale.status_code == 409
    missing_token = await api.post(f"/tasks/{pushed['id']}/lease")
    assert missing_token.status_code == 422 and missing_token.json()["detail"][0]["loc"] == ["header", "x-lease-token"]
    assert (await api.post(f"/tasks/{uuid.uuid4()}/lease", headers={"x-lease-token": "t"})).status_code == 404
    bad_seconds = await api.post(f"/tasks/{pushed['id']}/lease", params={"seconds": -5}, headers={"x-lease-token": "t"})
    assert bad_seconds.status_code == 400
