"""msgspec's validation errors read as the FastAPI/pydantic errors mula's clients know."""

from __future__ import annotations

import msgspec
import pytest
from starlette.requests import Request

from redisched.models import ScheduleCreate, TaskPatch, TaskPush
from redisched.server.inputs import parse_datetime
from redisched.server.responses import paginated
from redisched.server.validation import from_msgspec, uuid_error

PUSH = {"organisation": "org1", "data": {}, "priority": 1}


def _error(document, target=TaskPush):
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(document, target, strict=False)
    return from_msgspec(caught.value, document, target)


@pytest.mark.parametrize(
    ("document", "kind", "loc", "msg", "value"),
    [
        ({"data": {}}, "missing", ["body", "organisation"], "Field required", {"data": {}}),
        ({**PUSH, "data": "hello"}, "dict_type", ["body", "data"], "Input should be a valid dictionary", "hello"),
        ({**PUSH, "x": 1}, "extra_forbidden", ["body", "x"], "Extra inputs are not permitted", 1),
        ({**PUSH, "": 1}, "extra_forbidden", ["body", ""], "Extra inputs are not permitted", 1),
        ({**PUSH, "priority": "high"}, "int_parsing", ["body", "priority"],
         "Input should be a valid integer, unable to parse string as an integer", "high"),
        ({**PUSH, "priority": 1.5}, "int_from_float", ["body", "priority"],
         "Input should be a valid integer, got a number with a fractional part", 1.5),
        ({**PUSH, "organisation": 7}, "string_type", ["body", "organisation"], "Input should be a valid string", 7),
        ([1], "model_attributes_type", ["body"], "Input should be a valid dictionary or object to extract fields from", [1]),
    ],
)  # fmt: skip
def test_push_errors(document, kind, loc, msg, value):
    assert _error(document) == {"type": kind, "loc": loc, "msg": msg, "input": value}


def test_enum_error_lists_the_values_like_pydantic():
    error = _error({"status": "done"}, TaskPatch)
    expected = "'pending', 'queued', 'dispatched', 'running', 'completed', 'failed' or 'cancelled'"
    assert error == {"type": "enum", "loc": ["body", "status"], "msg": f"Input should be {expected}", "input": "done",
                     "ctx": {"expected": expected}}  # fmt: skip


def test_uuid_errors_say_why():
    assert uuid_error(["path", "task_id"], "not-a-uuid")["msg"] == (
        "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by "
        "[0-9a-fA-F-], found `n` at 1"
    )
    assert uuid_error(["path", "task_id"], "abc")["msg"] == (
        "Input should be a valid UUID, invalid length: expected length 32 for simple format, found 3"
    )
    assert _error({**PUSH, "id": "zz"})["type"] == "uuid_parsing"


def test_schedule_create_with_an_unparsable_datetime():
    error = _error({"scheduler_id": "b", "organisation": "o", "data": {}, "deadline_at": "soon"}, ScheduleCreate)
    assert error["type"] == "datetime_from_date_parsing" and error["loc"] == ["body", "deadline_at"]


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2025-06-01", "2025-06-01T00:00:00+00:00"),
        ("2025-06-01T10:00:00", "2025-06-01T10:00:00+00:00"),
        ("2025-06-01T10:00:00Z", "2025-06-01T10:00:00+00:00"),
        ("2025-06-01T12:00:00+02:00", "2025-06-01T12:00:00+02:00"),
    ],
)
def test_datetimes_in_are_any_iso_8601_naive_meaning_utc(text, iso):
    assert parse_datetime(text).isoformat() == iso


def test_a_non_datetime_is_none():
    assert parse_datetime("yesterday") is None


def _request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "scheme": "http", "server": ("h", 8000), "path": "/tasks",
                    "query_string": query.encode(), "headers": [(b"host", b"h:8000")], "root_path": ""})  # fmt: skip


@pytest.mark.parametrize(
    ("query", "count", "offset", "limit", "following", "preceding"),
    [
        ("scheduler_id=boefje&limit=3", 9, 0, 3, "http://h:8000/tasks?scheduler_id=boefje&limit=3&offset=3", None),
        ("offset=6&limit=3", 9, 6, 3, "http://h:8000/tasks?limit=3&offset=9", "http://h:8000/tasks?limit=3&offset=3"),
        ("offset=8&limit=3", 9, 8, 3, None, "http://h:8000/tasks?limit=3&offset=5"),
        ("", 0, 0, 10, None, None),
    ],
)  # fmt: skip
def test_pagination_links_follow_mula(query, count, offset, limit, following, preceding):
    page = msgspec.json.decode(paginated(_request(query), count, [], offset, limit).body)
    assert (page["next"], page["previous"]) == (following, preceding)
