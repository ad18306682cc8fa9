"""Push as mula's own suite and OpenKAT's runners see it: which id a task gets, which ``data``
is stored, which payloads are refused, and datetimes the runners can parse."""

from __future__ import annotations

import uuid
from datetime import datetime

import pydantic

from tests.acceptance.harness import api, boefje_push, db_dsn, normalizer_push, report_push, settings, template_db  # noqa: F401

CONFLICT = {"detail": "Conflict error occurred: queue is not allowed to push items"}


class RunnerJob(pydantic.BaseModel):
    """The part of the boefje runner's models (``boefjes/worker/job_models.py``) that refuses a
    naive datetime: every popped task's ``data`` is parsed with it."""

    started_at: pydantic.AwareDatetime | None = None
    ended_at: pydantic.AwareDatetime | None = None


class RunnerBoefjeMeta(RunnerJob):
    id: uuid.UUID


class RunnerRawData(pydantic.BaseModel):
    id: uuid.UUID
    boefje_meta: RunnerBoefjeMeta
    mime_types: list[dict[str, str]]


class RunnerNormalizerMeta(pydantic.BaseModel):
    id: uuid.UUID
    raw_data: RunnerRawData


class RunnerPop(pydantic.BaseModel):
    results: list[dict]


async def test_pushes_without_an_id_get_fresh_ids_even_when_they_share_a_data_id(api):
    shared = str(uuid.uuid4())
    first = await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|one.example", id=shared))
    second = await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|two.example", id=shared))
    assert (first.status_code, second.status_code) == (201, 201)
    ids = {first.json()["id"], second.json()["id"]}
    assert len(ids) == 2 and shared not in ids
    for task in (first.json(), second.json()):
        assert task["data"]["id"] == task["id"]
        assert (await api.get(f"/tasks/{task['id']}")).json()["data"]["id"] == task["id"]


async def test_a_normalizer_push_without_an_id_gets_a_fresh_one(api):
    body = normalizer_push()
    body["data"]["id"] = shared = str(uuid.uuid4())
    first = (await api.post("/schedulers/normalizer/push", json=body)).json()
    assert first["id"] == first["data"]["id"] != shared


async def test_twins_are_refused_by_hash_only_with_mulas_detail(api):
    same_id = str(uuid.uuid4())
    queued = await api.post("/schedulers/boefje/push", json={**boefje_push("Hostname|internet|t.example", id=same_id), "id": same_id})
    assert queued.status_code == 201
    for body in (
        boefje_push("Hostname|internet|t.example"),  # no id
        boefje_push("Hostname|internet|t.example", id=str(uuid.uuid4())),  # another data.id
        {**boefje_push("Hostname|internet|t.example", id=same_id), "id": same_id},  # the very same task
    ):
        response = await api.post("/schedulers/boefje/push", json=body)
        assert response.status_code == 409 and response.json() == CONFLICT, body


async def test_a_push_whose_id_equals_data_id_stores_data_as_sent(api):
    same = str(uuid.uuid4())
    data = {"id": same, "boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|as-sent.example",
            "organization": "org1", "extra": {"kept": [1, 2.5, None]}}  # fmt: skip
    pushed = await api.post("/schedulers/boefje/push", json={"organisation": "org1", "priority": 3, "id": same, "data": data})
    assert pushed.status_code == 201
    assert pushed.json()["data"] == data  # no dispatches, deduplication_key or boefje.oci_image added
    assert (await api.get(f"/tasks/{same}")).json()["data"] == data
    [popped] = (await api.post("/schedulers/boefje/pop")).json()["results"]
    assert popped["data"] == data
    listed = (await api.get("/tasks", params={"scheduler_id": "boefje"})).json()["results"]
    assert [task["data"] for task in listed] == [data]  # the history has it as sent too


async def test_a_push_with_another_id_stores_data_normalised(api):
    data = {"id": str(uuid.uuid4()), "boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|n.example",
            "organization": "org1", "extra": 1}  # fmt: skip
    task = (await api.post("/schedulers/boefje/push", json={"organisation": "org1", "priority": 3, "data": data})).json()
    assert task["data"] == {
        "id": task["id"], "boefje": {"id": "dns-records", "name": None, "version": None, "oci_image": None},
        "input_ooi": "Hostname|internet|n.example", "organization": "org1", "deduplication_key": None, "dispatches": [],
    }  # fmt: skip


async def test_a_report_push_stores_data_as_sent(api):
    body = report_push("recipe-as-sent")
    body["data"]["extra"] = "kept"
    task = (await api.post("/schedulers/report/push", json=body)).json()
    assert task["data"] == body["data"]


async def test_a_normalizer_push_needs_the_boefje_meta_fields_mula_requires(api):
    for missing in ("started_at", "ended_at", "input_ooi"):
        body = normalizer_push()
        del body["data"]["raw_data"]["boefje_meta"][missing]
        response = await api.post("/schedulers/normalizer/push", json=body)
        assert response.status_code == 400, missing
        assert response.json() == {"detail": "Bad request error occurred: malformed item"}
    body = normalizer_push()
    del body["data"]["raw_data"]["mime_types"]
    assert (await api.post("/schedulers/normalizer/push", json=body)).status_code == 400
    assert (await api.post("/schedulers/normalizer/push", json=normalizer_push())).status_code == 201  # null is fine


async def test_naive_payload_datetimes_are_stored_and_answered_as_utc(api):
    body = normalizer_push()
    meta = body["data"]["raw_data"]["boefje_meta"]
    meta["started_at"], meta["ended_at"] = "2025-06-01T10:00:00", "2025-06-01"  # naive, date-only
    pushed = await api.post("/schedulers/normalizer/push", json=body)
    assert pushed.status_code == 201
    stored = pushed.json()["data"]["raw_data"]["boefje_meta"]
    assert datetime.fromisoformat(stored["started_at"]) == datetime.fromisoformat("2025-06-01T10:00:00+00:00")
    assert datetime.fromisoformat(stored["ended_at"]) == datetime.fromisoformat("2025-06-01T00:00:00+00:00")
    aware = normalizer_push()
    aware["data"]["raw_data"]["boefje_meta"]["started_at"] = "2025-06-01T12:00:00+02:00"  # kept as sent
    assert (await api.post("/schedulers/normalizer/push", json=aware)).status_code == 201

    popped = await api.post("/schedulers/normalizer/pop")
    tasks = RunnerPop.model_validate_json(popped.content).results
    assert len(tasks) == 2
    for task in tasks:  # what made every pop that included such a task fail in the runner
        RunnerNormalizerMeta.model_validate(task["data"])
    assert {t["data"]["raw_data"]["boefje_meta"]["started_at"] for t in tasks} >= {"2025-06-01T12:00:00+02:00"}
    listed = (await api.get("/tasks", params={"scheduler_id": "normalizer"})).json()["results"]
    for task in listed:
        RunnerNormalizerMeta.model_validate(task["data"])


async def test_naive_datetimes_in_data_kept_as_sent_or_patched_are_made_utc(api):
    same = str(uuid.uuid4())
    data = {"id": same, "boefje": {"id": "dns-records"}, "input_ooi": None, "organization": "org1",
            "started_at": "2025-06-01T10:00:00"}  # fmt: skip
    pushed = (await api.post("/schedulers/boefje/push", json={"organisation": "org1", "priority": 3, "id": same, "data": data})).json()
    RunnerJob.model_validate(pushed["data"])
    patched = await api.patch(f"/tasks/{same}", json={"data": {**data, "ended_at": "2025-06-01T11:00:00.5"}})
    assert patched.status_code == 200
    RunnerJob.model_validate(patched.json()["data"])
    assert RunnerJob.model_validate((await api.get(f"/tasks/{same}")).json()["data"]).ended_at.utcoffset().total_seconds() == 0


async def test_a_push_that_keeps_a_finished_tasks_id_is_refused_and_the_history_stays(api):
    same = str(uuid.uuid4())
    body = {**boefje_push("Hostname|internet|done.example", id=same), "id": same}
    assert (await api.post("/schedulers/boefje/push", json=body)).status_code == 201
    await api.post("/schedulers/boefje/pop")
    assert (await api.patch(f"/tasks/{same}", json={"status": "completed"})).status_code == 200
    await api.get("/tasks")  # the history has caught up: only Postgres holds the task now
    again = {**boefje_push("Hostname|internet|other.example", id=same), "id": same}
    response = await api.post("/schedulers/boefje/push", json=again)
    assert response.status_code == 409
    assert response.json() == {"detail": "Conflict error occurred: a finished task already has this id"}
    stored = (await api.get(f"/tasks/{same}")).json()
    assert stored["status"] == "completed" and stored["data"]["input_ooi"] == "Hostname|internet|done.example"
    fresh = await api.post("/schedulers/boefje/push", json={**again, "id": None})  # no id kept: a fresh one
    assert fresh.status_code == 201 and fresh.json()["id"] != same


async def test_a_hand_back_while_a_twin_is_queued_is_409_and_the_task_stays_dispatched(api):
    body = normalizer_push()  # no schedule: a dispatched twin does not block a push
    await api.post("/schedulers/normalizer/push", json=body)
    [popped] = (await api.post("/schedulers/normalizer/pop")).json()["results"]
    assert (await api.post("/schedulers/normalizer/push", json=body)).status_code == 201
    response = await api.post("/schedulers/normalizer/push", json=popped)
    assert response.status_code == 409 and response.json() == CONFLICT
    assert (await api.get(f"/tasks/{popped['id']}")).json()["status"] == "dispatched"
    assert (await api.get("/schedulers/normalizer")).json()["qsize"] == 1
