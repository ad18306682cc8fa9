"""Every domain error's kind has its HTTP answer in server/errors.py, and only there."""

from __future__ import annotations

import pytest

from redisched import errors
from redisched.errors import Conflict, Kind, QueueFull, SchedulerError
from redisched.filters import FilterError, parse_filter_request
from redisched.server.errors import ANSWERS, detail_of, headers_of, status_of


def test_every_kind_has_an_answer():
    assert set(ANSWERS) == set(Kind)


def test_the_contract_s_answers_for_queue_errors():
    conflict = Conflict("queue is not allowed to push items")
    assert (status_of(conflict), detail_of(conflict), headers_of(conflict)) == (
        409, "Conflict error occurred: queue is not allowed to push items", {"Retry-After": "60"},
    )  # fmt: skip
    assert (status_of(QueueFull()), detail_of(QueueFull())) == (429, "Too many requests")


def test_a_filter_error_is_a_domain_error_with_a_400_or_mula_s_422():
    with pytest.raises(FilterError) as bad:
        parse_filter_request({"filters": "nope"})
    assert isinstance(bad.value, SchedulerError) and status_of(bad.value) == 400
    assert detail_of(bad.value).startswith("Invalid filter(s): ")
    with pytest.raises(FilterError) as unknown:
        parse_filter_request({"filters": [{"column": "organisation", "operator": "nope", "value": "x"}]})
    assert status_of(unknown.value) == 422 and isinstance(detail_of(unknown.value), list)


def test_domain_errors_carry_no_http():
    for error in vars(errors).values():
        if isinstance(error, type) and issubclass(error, SchedulerError):
            assert not {"status_code", "headers", "detail", "prefix"} & set(vars(error)), error
