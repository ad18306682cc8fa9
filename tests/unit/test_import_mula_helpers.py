"""What ``import-mula`` does to the values mula wrote, without servers."""

from __future__ import annotations

from redisched.history.import_mula import _libpq_url, normalised


def test_mula_datetime_strings_become_iso_8601_with_an_offset():
    data = {
        "raw_data": {"boefje_meta": {"started_at": "2025-01-01 10:00:00.250000", "ended_at": "2025-01-01 10:00:01+00:00"}},
        "list": ["2025-01-01 11:00:00+02:00", "2025-01-01T10:00:00"],
    }
    assert normalised(data) == {
        "raw_data": {"boefje_meta": {"started_at": "2025-01-01T10:00:00.250000Z", "ended_at": "2025-01-01T10:00:01Z"}},
        "list": ["2025-01-01T11:00:00+02:00", "2025-01-01T10:00:00Z"],
    }


def test_other_values_are_left_as_they_are():
    data = {"input_ooi": "Hostname|internet|2025-01-01 10:00:00", "already": "2025-01-01T10:00:00+00:00", "n": 3, "x": None}
    assert normalised(data) == data


def test_a_sqlalchemy_url_loses_its_driver():
    assert _libpq_url("postgresql+psycopg2://u:p@h:5432/scheduler") == "postgresql://u:p@h:5432/scheduler"
    assert _libpq_url("postgresql://u@h/s") == "postgresql://u@h/s"
