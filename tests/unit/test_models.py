"""Payload validation, normalisation and mula's dedup hashes."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from redisched.models import MalformedPayload, mmh3_hex, parse_payload, payload_hash, us_to_datetime, datetime_to_us


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hostname|internet|example.com-dns-records-org1", "74956880324db1838156e1ebf7847448"),
        ("dns-records-org1", "316d04d4f0baf363b64ec113ce54f9ce"),
        ("a", "897859f6655555855a890e51483ab5e6"),
    ],
)
def test_mmh3_matches_the_contract_vectors(text, expected):
    assert mmh3_hex(text) == expected


def test_boefje_hash_with_and_without_input_ooi():
    data = {"boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|example.com", "organization": "org1"}
    assert payload_hash("boefje", data) == "74956880324db1838156e1ebf7847448"
    assert payload_hash("boefje", {**data, "input_ooi": None}) == "316d04d4f0baf363b64ec113ce54f9ce"
    assert payload_hash("boefje", {**data, "input_ooi": ""}) == "316d04d4f0baf363b64ec113ce54f9ce"


def test_normalizer_and_report_hashes():
    meta_id = str(uuid.uuid4())
    data = {
        "normalizer": {"id": "n"},
        "raw_data": {"id": str(uuid.uuid4()), "boefje_meta": {"id": meta_id, "boefje": {"id": "b"}, "organization": "o"}},
    }
    assert payload_hash("normalizer", data) == mmh3_hex(f"n-{meta_id}-o")
    assert payload_hash("report", {"organisation_id": "o", "report_recipe_id": "r"}) == mmh3_hex("r-o")


def test_payloads_are_normalised_with_defaults_and_unknown_keys_dropped():
    payload = parse_payload("boefje", {"boefje": {"id": "x"}, "organization": "o", "junk": 1})
    encoded = msgspec.json.decode(msgspec.json.encode(payload))
    assert list(encoded) == ["id", "boefje", "input_ooi", "organization", "deduplication_key", "dispatches"]
    assert encoded["boefje"] == {"id": "x", "name": None, "version": None, "oci_image": None}
    assert encoded["dispatches"] == [] and encoded["input_ooi"] is None


@pytest.mark.parametrize("data", [{"foo": "bar"}, {"boefje": "x", "organization": "o"}, {"boefje": {"id": 3}, "organization": "o"}])
def test_malformed_payloads_raise(data):
    with pytest.raises(MalformedPayload):
        parse_payload("boefje", data)


def test_microsecond_times_round_trip_exactly():
    us = 1_764_245_394_985_477
    assert datetime_to_us(us_to_datetime(us)) == us
    assert msgspec.json.encode(us_to_datetime(1_764_245_394_000_000)) == b'"2025-11-27T12:09:54Z"'
