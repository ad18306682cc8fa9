"""``/schedules``: create, get, list, search, patch, delete."""

from __future__ import annotations

import uuid

from tests.acceptance.harness import api, boefje_push, db_dsn, settings, template_db  # noqa: F401

BOEFJE_DATA = {"boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|s.example", "organization": "org1"}


# mula's Schedule model refusing an expression, as its API answers it (POST and PATCH).
CRON_REFUSED = "Validation error occurred: 1 validation error for Schedule\nschedule\n  Value error, Invalid cron expression: {}"


def _new(**overrides) -> dict:
    return {"scheduler_id": "boefje", "organisation": "org1", "data": BOEFJE_DATA, "schedule": "0 * * * *", **overrides}


async def test_create_get_and_delete(api):
    created = await api.post("/schedules", json=_new())
    assert created.status_code == 201
    schedule = created.json()
    assert list(schedule) == ["id", "scheduler_id", "organisation", "hash", "data", "enabled", "schedule", "deadline_at",
                              "created_at", "modified_at"]  # fmt: skip
    assert schedule["data"] == BOEFJE_DATA and schedule["enabled"] is True
    assert schedule["deadline_at"].endswith(":00:00Z")  # the next cron run
    assert (await api.get(f"/schedules/{schedule['id']}")).json() == schedule
    deleted = await api.delete(f"/schedules/{schedule['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await api.delete(f"/schedules/{schedule['id']}")).status_code == 204
    assert (await api.get(f"/schedules/{schedule['id']}")).status_code == 404


async def test_create_with_a_deadline_date_only(api):
    schedule = (await api.post("/schedules", json=_new(schedule=None, deadline_at="2030-06-01"))).json()
    assert schedule["deadline_at"] == "2030-06-01T00:00:00Z"


async def test_create_errors(api):
    cases = [
        (_new(schedule=None), 400, "Bad request error occurred: Either deadline_at or schedule must be provided"),
        (_new(scheduler_id="nope"), 400, "Bad request error occurred: Scheduler nope not found"),
        (_new(data={"foo": 1}), 400, None),
        (_new(schedule="61 * * * *"), 400, None),
    ]
    for body, status, detail in cases:
        response = await api.post("/schedules", json=body)
        assert response.status_code == status, body
        if detail:
            assert response.json() == {"detail": detail}
    response = await api.post("/schedules", json=_new(schedule="61 * * * *"))
    assert response.json()["detail"].startswith(CRON_REFUSED.format("61 * * * *"))
    response = await api.post("/schedules", json={**_new(), "colour": "red", "size": 3})
    assert response.status_code == 422
    assert [(e["type"], e["loc"]) for e in response.json()["detail"]] == [
        ("extra_forbidden", ["body", "colour"]), ("extra_forbidden", ["body", "size"])
    ]


async def test_schedule_data_that_does_not_validate_is_400_in_pydantics_words(api):
    response = await api.post("/schedules", json=_new(data={"invalid": "invalid"}))
    assert response.status_code == 400
    lines = response.json()["detail"].split("\n")
    assert lines[0] == "Bad request error occurred: 2 validation errors for BoefjeTask"
    assert lines[1] == "boefje" and lines[2].startswith("  Field required [type=missing, input_value={'invalid': 'invalid'}")
    assert "organization" in lines
    one = await api.post("/schedules", json=_new(data={"boefje": {"id": "b"}, "organization": 5}))
    assert one.json()["detail"].startswith(
        "Bad request error occurred: 1 validation error for BoefjeTask\norganization\n  Input should be a valid string"
    )


async def test_create_a_duplicate_hash_is_409(api):
    first = (await api.post("/schedules", json=_new())).json()
    response = await api.post("/schedules", json=_new())
    assert response.status_code == 409
    assert response.headers["retry-after"] == "60"
    assert response.json() == {"detail": f"Conflict error occurred: schedule with the same hash already exists: {first['hash']}"}


async def test_list_sees_schedules_that_pushes_created(api):
    for name in ("a", "b", "c"):
        await api.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{name}.example"))
    page = (await api.get("/schedules?scheduler_id=boefje&limit=2")).json()
    assert page["count"] == 3 and len(page["results"]) == 2
    assert page["next"] == "http://testserver/schedules?scheduler_id=boefje&limit=2&offset=2"
    assert (await api.get("/schedules", params={"enabled": "false"})).json()["count"] == 0
    assert (await api.get("/schedules", params={"enabled": "maybe"})).status_code == 422


async def test_list_min_after_max_is_400(api):
    response = await api.get("/schedules", params={"min_deadline_at": "2030-01-02", "max_deadline_at": "2030-01-01"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request error occurred: min_deadline_at must be less than max_deadline_at"}


async def test_search_needs_a_filter_body(api):
    await api.post("/schedules", json=_new())
    await api.post("/schedules", json=_new(organisation="org2", data={**BOEFJE_DATA, "organization": "org2"}))
    body = {"filters": [{"column": "organisation", "operator": "eq", "value": "org2"}]}
    page = (await api.post("/schedules/search", json=body)).json()
    assert page["count"] == 1 and page["results"][0]["organisation"] == "org2"
    missing = await api.post("/schedules/search")
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["type"] == "missing"
    bad = await api.post("/schedules/search", json={"filters": [{"column": "nope", "operator": "eq", "value": 1}]})
    assert bad.status_code == 400


async def test_patch_copies_fields(api):
    schedule = (await api.post("/schedules", json=_new())).json()
    patched = await api.patch(f"/schedules/{schedule['id']}", json={"enabled": False, "schedule": "5 * * * *", "colour": "x"})
    assert patched.status_code == 200
    assert patched.json()["enabled"] is False and patched.json()["schedule"] == "5 * * * *"
    assert patched.json()["deadline_at"] == schedule["deadline_at"]  # not recomputed (mula)


async def test_patch_errors(api):
    schedule = (await api.post("/schedules", json=_new())).json()
    bad_cron = await api.patch(f"/schedules/{schedule['id']}", json={"schedule": "nonsense"})
    assert bad_cron.status_code == 400
    assert bad_cron.json()["detail"].startswith(CRON_REFUSED.format("nonsense"))
    assert (await api.patch(f"/schedules/{schedule['id']}", json={})).status_code == 400
    assert (await api.patch(f"/schedules/{uuid.uuid4()}", json={"enabled": False})).status_code == 404
    assert (await api.patch("/schedules/nope", json={"enabled": False})).status_code == 422


async def test_deleting_a_schedule_unlinks_its_live_and_finished_tasks(api):
    """mula's foreign key (ON DELETE SET NULL): right after the DELETE, no task names the
    schedule, whether Redis (live) or only Postgres (finished) holds it."""
    finished = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|del.example"))).json()
    [popped] = (await api.post("/schedulers/boefje/pop")).json()["results"]
    await api.patch(f"/tasks/{popped['id']}", json={"status": "completed"})
    queued = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|del.example"))).json()
    dispatched_push = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|del2.example"))).json()
    schedule_id = queued["schedule_id"]
    assert schedule_id and finished["schedule_id"] == schedule_id
    other = dispatched_push["schedule_id"]
    assert (await api.delete(f"/schedules/{schedule_id}")).status_code == 204
    for task in (finished, queued):
        assert (await api.get(f"/tasks/{task['id']}")).json()["schedule_id"] is None
    assert (await api.get(f"/tasks/{dispatched_push['id']}")).json()["schedule_id"] == other  # another schedule's
    [popped] = (await api.post("/schedulers/boefje/pop")).json()["results"]
    assert popped["id"] == queued["id"] and popped["schedule_id"] is None
    listed = (await api.get("/tasks", params={"scheduler_id": "boefje"})).json()["results"]
    assert {task["id"]: task["schedule_id"] for task in listed} == {
        finished["id"]: None, queued["id"]: None, dispatched_push["id"]: other
    }
