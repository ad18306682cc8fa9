"""``/schedulers``: list, get, push and pop, through the ASGI app."""

from __future__ import annotations

import uuid

from tests.acceptance.harness import api, boefje_push, db_dsn, normalizer_push, report_push, settings, template_db  # noqa: F401


async def test_lists_the_three_schedulers_in_order(api):
    response = await api.get("/schedulers")
    assert response.status_code == 200
    assert [s["id"] for s in response.json()] == ["boefje", "normalizer", "report"]
    assert response.json()[0] == {"id": "boefje", "type": "boefje", "item_type": "BoefjeTask", "qsize": 0, "last_activity": None}


async def test_scheduler_counts_queued_tasks_and_dates_last_activity(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|a.example"))
    scheduler = (await api.get("/schedulers/boefje")).json()
    assert scheduler["qsize"] == 1
    assert scheduler["last_activity"].endswith("Z")


async def test_unknown_scheduler_is_404(api):
    for response in (
        await api.get("/schedulers/nope"),
        await api.post("/schedulers/nope/push", json=boefje_push("Hostname|internet|a.example")),
        await api.post("/schedulers/nope/pop"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Resource not found: Scheduler nope not found"}


async def test_push_answers_201_with_the_stored_task(api):
    response = await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|example.com"))
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    task = response.json()
    assert list(task) == ["id", "scheduler_id", "schedule_id", "organisation", "priority", "status", "type", "hash",
                          "data", "created_at", "modified_at"]  # fmt: skip
    assert task["status"] == "queued" and task["type"] == "boefje" and task["priority"] == 10
    assert task["hash"] == "74956880324db1838156e1ebf7847448"
    assert task["data"]["id"] == task["id"]
    assert task["data"]["boefje"]["oci_image"] is None and task["data"]["dispatches"] == []


async def test_push_of_a_queued_twin_is_409_with_retry_after(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|twin.example"))
    response = await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|twin.example", priority=3))
    assert response.status_code == 409
    assert response.headers["retry-after"] == "60"
    assert response.json() == {"detail": "Conflict error occurred: queue is not allowed to push items"}


async def test_push_malformed_items_are_400(api):
    no_boefje = boefje_push("Hostname|internet|a.example")
    del no_boefje["data"]["boefje"]
    cases = [
        {**boefje_push("Hostname|internet|a.example"), "priority": 0},
        {k: v for k, v in boefje_push("Hostname|internet|a.example").items() if k != "priority"},
        {"organisation": "org1", "priority": 1, "data": {"foo": "bar"}},
        no_boefje,
    ]
    for body in cases:
        response = await api.post("/schedulers/boefje/push", json=body)
        assert response.status_code == 400, body
        assert response.json() == {"detail": "Bad request error occurred: malformed item"}


async def test_push_scheduler_id_mismatch_is_400(api):
    body = {**boefje_push("Hostname|internet|a.example"), "scheduler_id": "normalizer"}
    response = await api.post("/schedulers/boefje/push", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Bad request error occurred: scheduler_id in item does not match the scheduler_id in the path"
    }


async def test_push_validation_errors_are_fastapi_422s(api):
    body = boefje_push("Hostname|internet|a.example")
    missing_org = {k: v for k, v in body.items() if k != "organisation"}
    cases = {
        "missing organisation": (missing_org, {"type": "missing", "loc": ["body", "organisation"], "msg": "Field required", "input": missing_org}),
        "data not an object": ({**body, "data": "hello"}, {"type": "dict_type", "loc": ["body", "data"], "msg": "Input should be a valid dictionary", "input": "hello"}),
        "unknown key": ({**body, "color": "red"}, {"type": "extra_forbidden", "loc": ["body", "color"], "msg": "Extra inputs are not permitted", "input": "red"}),
        "priority not an int": ({**body, "priority": "high"}, {"type": "int_parsing", "loc": ["body", "priority"], "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "high"}),
    }  # fmt: skip
    for label, (sent, expected) in cases.items():
        response = await api.post("/schedulers/boefje/push", json=sent)
        assert response.status_code == 422, label
        assert response.json() == {"detail": [expected]}, label


async def test_push_bad_uuid_and_bad_json_are_422(api):
    response = await api.post("/schedulers/boefje/push", json={**boefje_push("Hostname|internet|a.example"), "id": "nope"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "uuid_parsing"
    assert response.json()["detail"][0]["loc"] == ["body", "id"]
    response = await api.post("/schedulers/boefje/push", content=b'{"organisation": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_push_empty_body_is_422_missing_body(api):
    response = await api.post("/schedulers/boefje/push", content=b"")
    assert response.status_code == 422
    assert response.json() == {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]}


async def test_push_keeps_an_id_equal_to_data_id_and_replaces_a_different_one(api):
    same = str(uuid.uuid4())
    body = boefje_push("Hostname|internet|same.example", id=same)
    task = (await api.post("/schedulers/boefje/push", json={**body, "id": same})).json()
    assert task["id"] == task["data"]["id"] == same
    other = str(uuid.uuid4())
    task = (await api.post("/schedulers/boefje/push", json={**boefje_push("Hostname|internet|other.example"), "id": other})).json()
    assert task["id"] == task["data"]["id"] != other


async def test_push_to_normalizer_and_report(api):
    normalizer = await api.post("/schedulers/normalizer/push", json=normalizer_push())
    assert normalizer.status_code == 201
    assert normalizer.json()["schedule_id"] is None
    report = await api.post("/schedulers/report/push", json=report_push())
    assert report.status_code == 201
    assert report.json()["hash"] == "5e577ccf877db1ec3d050383c4abbc40"


async def test_pop_returns_dispatched_tasks_best_priority_first(api):
    for priority, name in ((5, "p5"), (1, "p1"), (-5, "neg")):
        await api.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{name}.example", priority=priority))
    popped = []
    for _ in range(3):
        response = await api.post("/schedulers/boefje/pop", params={"limit": 10})
        assert response.status_code == 200
        [task] = response.json()["results"]  # boefje without deduplication_key: one at a time
        assert task["status"] == "dispatched"
        popped.append(task["priority"])
    assert popped == [-5, 1, 5]
    assert (await api.post("/schedulers/boefje/pop")).json() == {"results": []}


async def test_pop_hands_out_a_lease_token_header(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|lease.example"))
    response = await api.post("/schedulers/boefje/pop")
    assert response.headers["x-lease-token"]
    assert "x-lease-token" not in (await api.post("/schedulers/boefje/pop")).headers


async def test_pop_of_normalizers_without_limit_takes_every_match(api):
    for _ in range(3):
        await api.post("/schedulers/normalizer/push", json=normalizer_push())
    assert len((await api.post("/schedulers/normalizer/pop", params={"limit": 2})).json()["results"]) == 2
    assert len((await api.post("/schedulers/normalizer/pop")).json()["results"]) == 1


async def test_pop_with_the_runners_filters(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|a.example", boefje={"oci_image": "ghcr.io/x:1"}))
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|b.example", boefje_id="nmap", boefje={"oci_image": "ghcr.io/x:1"}))
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|c.example", priority=1))  # no image
    filters = {"filters": [
        {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": ["ghcr.io/x:1"]},
        {"column": "data", "field": "boefje__id", "operator": "in", "value": ["nmap"]},
    ]}  # fmt: skip
    [task] = (await api.post("/schedulers/boefje/pop", params={"limit": 1}, json=filters)).json()["results"]
    assert task["data"]["input_ooi"] == "Hostname|internet|b.example"
    assert (await api.post("/schedulers/boefje/pop", params={"limit": 1}, json=filters)).json() == {"results": []}


async def test_pop_with_an_organisation_filter(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|a.example", priority=1))
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|b.example", org="org3", priority=8))
    body = {"filters": [{"column": "organisation", "operator": "eq", "value": "org3"}]}
    [task] = (await api.post("/schedulers/boefje/pop", json=body)).json()["results"]
    assert task["organisation"] == "org3"


async def test_pop_invalid_filter_is_400_at_once(api):
    body = {"filters": [{"column": "nosuchcolumn", "operator": "eq", "value": "x"}]}
    response = await api.post("/schedulers/boefje/pop", json=body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Invalid filter(s): ")


async def test_pop_unknown_operator_is_mulas_422(api):
    body = {"filters": [{"column": "organisation", "operator": "~~", "value": "x"}]}
    response = await api.post("/schedulers/boefje/pop", json=body)
    assert response.status_code == 422
    [literal, as_dict] = response.json()["detail"]
    assert literal["type"] == "literal_error"
    assert literal["loc"] == ["body", "filters", "list[Filter]", 0, "operator"]
    assert as_dict["type"] == "dict_type"


async def test_pop_bad_limit_is_422(api):
    response = await api.post("/schedulers/boefje/pop", params={"limit": "many"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]
    assert (await api.post("/schedulers/boefje/pop", params={"limit": -1})).status_code == 422


async def test_unknown_query_parameters_are_ignored(api):
    response = await api.post("/schedulers/boefje/pop", params={"input_ooi": "x", "observed_at": "y"})
    assert response.status_code == 200
