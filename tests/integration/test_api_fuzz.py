"""Whatever the body, push, pop, patch, list and search never answer a 500."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from tests.acceptance.harness import api, db_dsn, settings, template_db  # noqa: F401

FUZZ = hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
columns = st.sampled_from(["organisation", "data", "priority", "status", "created_at", "id", "hash", "nope", ""]) | st.text(max_size=8)
operators = st.sampled_from(["eq", "==", "ne", "in", "not_in", "like", "ilike", "gt", "lte", "contains", "starts_with", "@>",
                             "<@", "is_null", "any", "match", "~~"]) | st.text(max_size=4)  # fmt: skip
filters = st.fixed_dictionaries(
    {"column": columns, "operator": operators, "value": json_values}, optional={"field": st.text(max_size=12) | json_values}
)
filter_requests = st.fixed_dictionaries({"filters": st.lists(filters, max_size=3) | st.dictionaries(st.sampled_from(["and", "or", "not", "x"]), st.lists(filters, max_size=2), max_size=3) | json_values})  # fmt: skip
boefje_data = st.fixed_dictionaries(
    {"boefje": st.fixed_dictionaries({"id": st.text(max_size=8) | json_values}, optional={"oci_image": json_values}),
     "organization": st.text(max_size=8) | json_values},
    optional={"input_ooi": json_values, "id": st.uuids().map(str) | json_values, "deduplication_key": json_values},
)  # fmt: skip
push_bodies = st.fixed_dictionaries(
    {}, optional={"organisation": st.text(max_size=8) | json_values, "data": boefje_data | json_values,
                  "priority": st.integers(-(2**70), 2**70) | json_values, "id": st.uuids().map(str) | json_values,
                  "scheduler_id": st.sampled_from(["boefje", "report"]) | json_values, "extra": json_values},
) | json_values  # fmt: skip
patch_bodies = st.dictionaries(
    st.sampled_from(["status", "priority", "data", "organisation", "created_at", "schedule_id", "hash", "type", "x"]), json_values | st.sampled_from(["queued", "running", "completed", "2025-01-01"]), max_size=4
) | json_values  # fmt: skip


@FUZZ
@given(body=push_bodies, scheduler=st.sampled_from(["boefje", "normalizer", "report", "nope"]))
async def test_push_never_fails_with_500(api, body, scheduler):
    response = await api.post(f"/schedulers/{scheduler}/push", json=body)
    assert response.status_code in (201, 400, 404, 409, 422), response.text


@FUZZ
@given(body=filter_requests | json_values, limit=st.none() | st.integers(-3, 5) | st.text(max_size=3))
async def test_pop_never_fails_with_500(api, body, limit):
    params = {} if limit is None else {"limit": limit}
    response = await api.post("/schedulers/boefje/pop", params=params, json=body)
    assert response.status_code in (200, 400, 422), response.text


@FUZZ
@given(body=patch_bodies)
async def test_patch_never_fails_with_500(api, body):
    pushed = await api.post("/schedulers/report/push", json={"organisation": "o", "priority": 1, "data": {"organisation_id": "o", "report_recipe_id": str(uuid.uuid4())}})
    for task_id in (pushed.json()["id"], str(uuid.uuid4())):
        response = await api.patch(f"/tasks/{task_id}", json=body)
        assert response.status_code in (200, 400, 404, 409, 422), response.text


@FUZZ
@given(body=filter_requests | json_values, target=st.sampled_from(["/tasks", "/schedules/search"]))
async def test_listing_and_search_never_fail_with_500(api, body, target):
    response = await api.post(target, json=body)
    assert response.status_code in (200, 400, 422), response.text
