"""Finish and fetch over HTTP: ``PATCH /tasks/{id}/pop_next`` patches a task as ``PATCH
/tasks/{id}`` does and pops the runner's next task(s) of the same queue in the same call;
every bad input answers as the contract says, and a refused request patches and pops nothing."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.acceptance.harness import api, api_client, boefje_push, db_dsn, settings, template_db  # noqa: F401

ORG2 = {"filters": [{"column": "organisation", "operator": "eq", "value": "org2"}]}


async def pushed(api, input_ooi: str, **options) -> dict:
    response = await api.post("/schedulers/boefje/push", json=boefje_push(input_ooi, **options))
    assert response.status_code == 201, response.text
    return response.json()


async def popped(api) -> tuple[dict, str]:
    response = await api.post("/schedulers/boefje/pop")
    [task] = response.json()["results"]
    return task, response.headers["x-lease-token"]


async def status_of(api, task_id: str) -> str:
    return (await api.get(f"/tasks/{task_id}")).json()["status"]


async def queued(api) -> int:
    return (await api.get("/schedulers/boefje")).json()["qsize"]


def counting_round_trips(api) -> list[int]:
    """The batch sizes the API's queue sends to Redis from now on (one entry per round trip)."""
    driver, sizes = api.services.queues.driver, []
    send = driver.send

    async def counted(calls):
        sizes.append(len(calls))
        return await send(calls)

    driver.send = counted
    return sizes


async def test_completing_a_task_brings_the_next_matching_one_in_one_script_call(api):
    first = await pushed(api, "Hostname|internet|first.example", priority=1)
    await pushed(api, "Hostname|internet|org1.example", priority=2)
    wanted = await pushed(api, "Hostname|internet|org2.example", org="org2", priority=3)
    task, token = await popped(api)
    assert task["id"] == first["id"]

    sent = counting_round_trips(api)
    response = await api.patch(
        f"/tasks/{task['id']}/pop_next", json={"status": "completed", **ORG2}, headers={"x-lease-token": token}
    )
    assert response.status_code == 200, response.text
    assert sent == [1]  # the patch and the pop: one script call
    body = response.json()
    assert body["task"]["id"] == first["id"] and body["task"]["status"] == "completed"
    [following] = body["results"]
    assert following["id"] == wanted["id"] and following["status"] == "dispatched"
    assert await status_of(api, wanted["id"]) == "dispatched"
    next_token = response.headers["x-lease-token"]
    assert next_token != token
    # the popped task's lease is the header's token: it finishes with it, and the old one is refused
    done = await api.patch(f"/tasks/{wanted['id']}", json={"status": "completed"}, headers={"x-lease-token": next_token})
    assert done.status_code == 200
    assert await queued(api) == 1


async def test_limit_and_an_empty_queue(api):
    first = await pushed(api, "Hostname|internet|a.example")
    task, token = await popped(api)
    assert task["id"] == first["id"]
    response = await api.patch(f"/tasks/{task['id']}/pop_next", json={"status": "failed"}, headers={"x-lease-token": token})
    assert response.status_code == 200
    assert response.json()["task"]["status"] == "failed" and response.json()["results"] == []
    assert "x-lease-token" not in response.headers

    second = await pushed(api, "Hostname|internet|b.example")
    task, token = await popped(api)
    await pushed(api, "Hostname|internet|c.example")
    none = await api.patch(
        f"/tasks/{second['id']}/pop_next", params={"limit": 0}, json={"status": "completed"}, headers={"x-lease-token": token}
    )
    assert none.status_code == 200 and none.json()["results"] == []
    assert await status_of(api, second["id"]) == "completed"
    assert await queued(api) == 1


async def test_a_runner_without_token_finishes_and_fetches_too(api):
    """OpenKAT's runners send no token: the task is found in whichever queue holds it."""
    first = await pushed(api, "Hostname|internet|a.example")
    second = await pushed(api, "Hostname|internet|b.example", priority=20)
    task, _token = await popped(api)
    response = await api.patch(f"/tasks/{task['id']}/pop_next", json={"status": "completed"})
    assert response.status_code == 200
    assert response.json()["task"]["id"] == first["id"]
    assert [t["id"] for t in response.json()["results"]] == [second["id"]]
    assert response.headers["x-lease-token"]


async def test_a_stale_token_is_409_and_pops_nothing(api):
    first = await pushed(api, "Hostname|internet|a.example")
    await pushed(api, "Hostname|internet|b.example", priority=20)
    task, token = await popped(api)
    stale = "0" * 16 + token[16:]
    response = await api.patch(f"/tasks/{task['id']}/pop_next", json={"status": "completed"}, headers={"x-lease-token": stale})
    assert response.status_code == 409, response.text
    assert response.headers["retry-after"] == "60"
    assert await status_of(api, first["id"]) == "dispatched"
    assert await queued(api) == 1


async def test_bad_input_patches_and_pops_nothing(api):
    first = await pushed(api, "Hostname|internet|a.example")
    await pushed(api, "Hostname|internet|b.example", priority=20)
    task, token = await popped(api)
    path, lease = f"/tasks/{task['id']}/pop_next", {"x-lease-token": token}
    bad_filter = {"status": "completed", "filters": [{"column": "nope", "operator": "eq", "value": 1}]}
    cases = [
        (dict(json=bad_filter), 400),
        (dict(json={"status": "completed", "filters": "org2"}), 400),
        (dict(json={}), 400),  # no data to patch
        (dict(json={"filters": ORG2["filters"]}), 400),  # filters alone patch nothing
        (dict(json={"status": "done"}), 422),
        (dict(json=["completed"]), 422),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 422),
        (dict(), 422),  # no body
        (dict(json={"status": "completed"}, params={"limit": -1}), 422),
        (dict(json={"status": "completed"}, params={"limit": "one"}), 422),
        (dict(content=b"status=completed", headers={"content-type": "application/x-www-form-urlencoded"}), 415),
    ]
    for request, status in cases:
        headers = {**lease, **request.pop("headers", {})}
        response = await api.patch(path, headers=headers, **request)
        assert response.status_code == status, (request, response.text)
    assert (await api.patch("/tasks/not-a-uuid/pop_next", json={"status": "completed"})).status_code == 422
    missing = await api.patch(f"/tasks/{uuid.uuid4()}/pop_next", json={"status": "completed"})
    assert missing.status_code == 404
    assert await status_of(api, first["id"]) == "dispatched"
    assert await queued(api) == 1
    # and the same request, well formed, still goes through
    response = await api.patch(path, json={"status": "completed"}, headers=lease)
    assert response.status_code == 200 and len(response.json()["results"]) == 1


async def test_it_is_in_openapi(api):
    document = (await api.get("/openapi.json")).json()
    operation = document["paths"]["/tasks/{task_id}/pop_next"]["patch"]
    assert {p["name"] for p in operation["parameters"]} == {"task_id", "limit", "status", "X-Lease-Token"}
    [status] = [p for p in operation["parameters"] if p["name"] == "status"]
    assert status["schema"]["enum"] == ["dispatched", "running"]
    assert {"200", "400", "404", "409", "413", "422", "503"} <= operation["responses"].keys()
    assert "X-Lease-Token" in operation["responses"]["200"]["headers"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "filters" in document["components"]["schemas"][body]["allOf"][1]["properties"]


@pytest.fixture
async def guarded(settings):
    tokens = {"admin_tokens": ["admin-secret"], "runner_tokens": ["runner-secret"]}
    async with api_client(settings.model_copy(update=tokens)) as client:
        yield client


async def test_a_runner_token_may_finish_and_fetch_status_only(guarded):
    admin, runner = {"authorization": "Bearer admin-secret"}, {"authorization": "Bearer runner-secret"}
    for name in ("a", "b"):
        await guarded.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{name}.example"), headers=admin)
    response = await guarded.post("/schedulers/boefje/pop", headers=runner)
    task_id, token = response.json()["results"][0]["id"], response.headers["x-lease-token"]
    path = f"/tasks/{task_id}/pop_next"
    assert (await guarded.patch(path, json={"status": "completed"})).status_code == 401
    forbidden = await guarded.patch(path, json={"status": "completed", "priority": 1}, headers={**runner, "x-lease-token": token})
    assert forbidden.status_code == 403
    response = await guarded.patch(path, json={"status": "completed"}, headers={**runner, "x-lease-token": token})
    assert response.status_code == 200 and len(response.json()["results"]) == 1


async def test_status_running_hands_popped_tasks_out_running_over_both_routes(api):
    for name in ("a", "b", "c"):
        await pushed(api, f"Hostname|internet|{name}.example")
    response = await api.post("/schedulers/boefje/pop?status=running")
    assert response.status_code == 200, response.text
    [task] = response.json()["results"]
    assert task["status"] == "running" and await status_of(api, task["id"]) == "running"
    token = response.headers["x-lease-token"]
    sent = counting_round_trips(api)
    response = await api.patch(f"/tasks/{task['id']}/pop_next?status=running", json={"status": "completed"},
                               headers={"x-lease-token": token})
    assert response.status_code == 200, response.text
    assert sent == [1]
    [following] = response.json()["results"]
    assert following["status"] == "running" and await status_of(api, following["id"]) == "running"
    plain = await api.post("/schedulers/boefje/pop")
    assert plain.json()["results"][0]["status"] == "dispatched"


@pytest.mark.parametrize("status", ["completed", "queued", "RUNNING", ""])
async def test_a_status_no_pop_hands_out_is_refused_and_patches_and_pops_nothing(api, status):
    await pushed(api, "Hostname|internet|a.example")
    await pushed(api, "Hostname|internet|b.example")
    task, token = await popped(api)
    response = await api.post(f"/schedulers/boefje/pop?status={status}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "status"]
    assert response.json()["detail"][0]["msg"] == "Input should be 'dispatched' or 'running'"
    response = await api.patch(f"/tasks/{task['id']}/pop_next?status={status}", json={"status": "completed"},
                               headers={"x-lease-token": token})
    assert response.status_code == 422, response.text
    assert await status_of(api, task["id"]) == "dispatched"
    assert await queued(api) == 1


async def test_a_long_poll_with_status_running_hands_the_task_pushed_meanwhile_out_running(api):
    async def push_later():
        await asyncio.sleep(0.3)
        return await pushed(api, "Hostname|internet|late.example")

    pusher = asyncio.create_task(push_later())
    response = await api.post("/schedulers/boefje/pop", params={"wait": 10, "status": "running"})
    late = await pusher
    assert response.status_code == 200, response.text
    [task] = response.json()["results"]
    assert (task["id"], task["status"]) == (late["id"], "running")
    assert await status_of(api, task["id"]) == "running"
    queues = api.services.queues
    keys = await queues.locate(task["id"])
    expiry_ms = await queues.redis.zscore(keys.leases, task["id"])
    assert expiry_ms > time.time() * 1000 + queues.layout.dispatch_lease_ms + 1000, "the running lease"


async def test_concurrent_pops_over_http_asking_either_status_each_get_theirs(api):
    for n in range(8):
        await pushed(api, f"Hostname|internet|c{n}.example")
    asked = ["running", "dispatched"] * 4
    responses = await asyncio.gather(*(api.post(f"/schedulers/boefje/pop?status={status}") for status in asked))
    tasks = [response.json()["results"][0] for response in responses]
    assert [task["status"] for task in tasks] == asked
    assert len({task["id"] for task in tasks}) == 8
    assert [await status_of(api, task["id"]) for task in tasks] == asked


async def test_a_tokenless_finish_and_fetch_of_a_task_this_api_popped_running_is_one_round_trip(api):
    for name in ("a", "b"):
        await pushed(api, f"Hostname|internet|{name}.example")
    [task] = (await api.post("/schedulers/boefje/pop?status=running")).json()["results"]
    sent = counting_round_trips(api)
    response = await api.patch(f"/tasks/{task['id']}/pop_next?status=running", json={"status": "completed"})
    assert response.status_code == 200, response.text
    assert sent == [1], "no token: the API's place hint names the task's partition"
    [following] = response.json()["results"]
    assert following["status"] == "running" and await status_of(api, task["id"]) == "completed"
