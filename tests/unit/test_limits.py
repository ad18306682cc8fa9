"""What the history can hold (redisched/limits.py): each limit at its value and one past it."""

from __future__ import annotations

import pytest

from redisched.errors import Kind
from redisched import limits
from redisched.limits import TooLarge


def test_indexed_columns_count_utf8_bytes():
    limits.check_columns({"organisation": "a" * limits.MAX_COLUMN_BYTES, "type": "é" * (limits.MAX_COLUMN_BYTES // 2)})
    with pytest.raises(TooLarge, match="^organisation must be at most 1024 bytes") as refused:
        limits.check_columns({"organisation": "é" * (limits.MAX_COLUMN_BYTES // 2) + "a"})
    assert (refused.value.field, refused.value.limit, refused.value.kind) == ("organisation", 1024, Kind.BAD_REQUEST)
    limits.check_columns({"schedule": "x" * 10_000})  # not indexed: only NUL matters
    with pytest.raises(TooLarge, match="^schedule must not contain NUL"):
        limits.check_columns({"schedule": "* * * * *\x00"})


def test_indexed_data_paths():
    limits.check_data({"raw_data": {"boefje_meta": {"input_ooi": "🎉" * (limits.MAX_INDEXED_STRING_BYTES // 4)}}})
    with pytest.raises(TooLarge, match=r"^data\.raw_data\.boefje_meta\.input_ooi must be at most 2048 bytes"):
        limits.check_data({"raw_data": {"boefje_meta": {"input_ooi": "🎉" * (limits.MAX_INDEXED_STRING_BYTES // 4) + "a"}}})
    limits.check_data({"input_ooi": list(range(50)), "boefje": "not an object"})
    with pytest.raises(TooLarge, match=r"^data\.input_ooi must be a string, or at most 256 bytes of JSON"):
        limits.check_data({"input_ooi": list(range(100))})


def test_nul_integers_size_and_unencodable_text_anywhere_in_data():
    with pytest.raises(TooLarge, match=r"^malformed item: data\.a\[1\]\.b must not contain NUL"):
        limits.check_data({"a": [0, {"b": "\x00"}]}, prefix="malformed item: ")
    with pytest.raises(TooLarge, match=r"^a key of data\.a must not contain NUL"):
        limits.check_data({"a": {"k\x00": 1}})
    limits.check_data({"text": "a backslash and u0000: \\u0000"})
    limits.check_data({"n": 10**limits.MAX_INTEGER_DIGITS - 1})
    with pytest.raises(TooLarge, match=r"^data must hold no integer of more than 4300 digits"):
        limits.check_data({"n": -(10**limits.MAX_INTEGER_DIGITS)})
    exact = limits.MAX_DATA_BYTES - len(b'{"x":""}')
    assert len(limits.check_data({"x": "y" * exact})) == limits.MAX_DATA_BYTES
    with pytest.raises(TooLarge, match="^data must be at most 1048576 bytes of JSON"):
        limits.check_data({"x": "y" * (exact + 1)})
    with pytest.raises(TooLarge, match="^data cannot be stored as JSON"):
        limits.check_data({"x": "\ud800"})
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TooLarge, match="^data cannot be stored as JSON"):
        limits.check_data(deep)
