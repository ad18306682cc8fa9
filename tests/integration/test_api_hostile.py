"""Hostile input gets a clear answer and changes nothing: deep JSON, a huge limit, unicode in
every string, and values that mean something to Lua's patterns or to SQL."""

from __future__ import annotations

import pytest

from tests.acceptance.harness import api, db_dsn, settings, template_db  # noqa: F401

LUA_AND_SQL_SPECIALS = ["%", "%d+", ".-", "[^%w]", "]]", "--[[", "\\", "'; DROP TABLE tasks; --", "a\u0000b"]


def boefje(boefje_id: str = "dns-records", org: str = "org1", ooi: str = "Hostname|internet|h.example") -> dict:
    return {"boefje": {"id": boefje_id, "oci_image": boefje_id}, "input_ooi": ooi, "organization": org}


async def _queued(api) -> int:
    return (await api.get("/schedulers/boefje")).json()["qsize"]


async def test_deeply_nested_json_is_refused_cleanly(api):
    deep = "[" * 100_000 + "]" * 100_000
    response = await api.post("/schedulers/boefje/push", content=f'{{"organisation": "o", "priority": 1, "data": {deep}}}')
    assert 400 <= response.status_code < 500
    assert await _queued(api) == 0
    nested = {"k": 1}
    for _ in range(200):
        nested = {"k": nested}
    response = await api.post("/schedulers/boefje/pop", json={"filters": [{"column": "data", "field": "x", "operator": "@>", "value": nested}]})
    assert response.status_code == 400 and response.json()["detail"].startswith("Invalid filter(s)")


async def test_a_huge_limit_is_answered_and_capped(api):
    for i in range(3):
        await api.post("/schedulers/normalizer/push", json={"organisation": "o", "priority": 1, "data": {
            "normalizer": {"id": "n"}, "raw_data": {"id": f"00000000-0000-4000-8000-00000000000{i}", "boefje_meta": {
                "id": f"00000000-0000-4000-8000-00000000001{i}", "boefje": {"id": "b"}, "input_ooi": None, "organization": "o",
                "started_at": None, "ended_at": None}, "mime_types": []}}})
    response = await api.post(f"/schedulers/normalizer/pop?limit={10**18}")
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    assert (await api.get(f"/tasks?limit={10**18}")).status_code in (200, 400)
    assert (await api.post("/schedulers/normalizer/pop?limit=-1")).status_code in (400, 422)


@pytest.mark.parametrize("text", ["Ωmega", "日本語", "🎉", "e\u0301", "\u202eevil", *LUA_AND_SQL_SPECIALS[:-1]])
async def test_any_string_round_trips_through_push_pop_and_filters(api, text):
    pushed = await api.post("/schedulers/boefje/push", json={"organisation": text, "priority": 5, "data": boefje(text, text, f"Hostname|internet|{text}")})
    assert pushed.status_code == 201, pushed.text
    task = pushed.json()
    assert task["organisation"] == text and task["data"]["boefje"]["id"] == text
    by_org = {"filters": [{"column": "organisation", "operator": "eq", "value": text}]}
    by_boefje = {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": [text]}]}
    assert (await api.post("/schedulers/boefje/pop", json={"filters": [{"column": "organisation", "operator": "eq", "value": text + "x"}]})).json()["results"] == []
    [popped] = (await api.post("/schedulers/boefje/pop", json=by_boefje if len(text) % 2 else by_org)).json()["results"]
    assert popped["id"] == task["id"]
    listed = await api.post("/tasks", json={"filters": [{"column": "data", "field": "boefje__id", "operator": "eq", "value": text}]})
    assert listed.status_code == 200 and [t["id"] for t in listed.json()["results"]] == [task["id"]]


async def test_a_nul_in_an_indexed_value_is_refused_and_changes_nothing(api):
    response = await api.post("/schedulers/boefje/push", json={"organisation": "a\u0000b", "priority": 5, "data": boefje()})
    assert response.status_code == 400
    assert await _queued(api) == 0


async def test_pop_next_with_a_foreign_token_a_finished_task_or_a_huge_limit(api):
    """Another task's lease token, another queue's, a garbage or 100 kB one: 409, nothing
    patched or popped; a huge limit is capped; a task patched again without a token is
    patched as PATCH /tasks does (mula's runners send none), its queue still served in order."""
    pushed = []
    for i in range(3):
        response = await api.post("/schedulers/boefje/push", json={"organisation": "org1", "priority": i + 1, "data": boefje(ooi=f"Hostname|internet|p{i}.example")})
        pushed.append(response.json()["id"])
    normalizer = {"normalizer": {"id": "n"}, "raw_data": {"id": "00000000-0000-4000-8000-000000000001", "boefje_meta": {
        "id": "00000000-0000-4000-8000-000000000002", "boefje": {"id": "b"}, "input_ooi": None, "organization": "o",
        "started_at": None, "ended_at": None}, "mime_types": []}}  # fmt: skip
    assert (await api.post("/schedulers/normalizer/push", json={"organisation": "o", "priority": 1, "data": normalizer})).status_code == 201
    leases = []
    for scheduler in ("boefje", "boefje", "normalizer"):
        response = await api.post(f"/schedulers/{scheduler}/pop")
        leases.append((response.json()["results"][0]["id"], response.headers["x-lease-token"]))
    (first, token), (second, second_token), (_, normalizer_token) = leases
    for foreign in (second_token, normalizer_token, "garbage", "x" * 100_000):
        response = await api.patch(f"/tasks/{first}/pop_next", json={"status": "completed"}, headers={"x-lease-token": foreign})
        assert response.status_code in (409, 431), (foreign[:20], response.text)
    assert (await api.get(f"/tasks/{first}")).json()["status"] == "dispatched"
    assert await _queued(api) == 1

    done = await api.patch(f"/tasks/{first}/pop_next", params={"limit": 10**9}, json={"status": "completed"}, headers={"x-lease-token": token})
    assert done.status_code == 200 and [t["id"] for t in done.json()["results"]] == [pushed[2]]
    again = await api.patch(f"/tasks/{first}/pop_next", json={"status": "completed"}, headers={"x-lease-token": token})
    assert again.status_code == 409  # its lease ended with the first completion
    huge = await api.patch(f"/tasks/{second}/pop_next", params={"limit": 10**30}, json={"status": "failed"}, headers={"x-lease-token": second_token})
    assert huge.status_code in (200, 422) and (await api.get(f"/tasks/{second}")).json()["status"] == ("failed" if huge.status_code == 200 else "dispatched")
    assert await _queued(api) == 0
