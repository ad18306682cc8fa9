"""What the Postgres history can hold, checked where every writer passes (the queue's push and
patch, the schedule store's create and patch), so nothing is acknowledged that the snapshotter
would then fail to write.

Postgres refuses a NUL in text and in jsonb strings (keys too), numbers past its numeric
format, and a b-tree entry larger than 2704 bytes (a third of a page: ``index row size ...
exceeds btree maximum``); the entry must fit uncompressed, since random text does not
compress. Which values are indexed: see ``history/migrations/*.sql``. ``task_counts``' key
holds a task's organisation and type together, so those two share one entry's room.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from redisched.errors import BadRequest

# A task's or schedule's data as stored (JSON, UTF-8). A JSON text of this size becomes at most
# a few MiB of jsonb, far below Postgres' 255 MiB, and keeps a snapshot batch bounded.
MAX_DATA_BYTES = 1 << 20
# organisation, type and hash (tasks), organisation and hash (schedules): UTF-8 bytes. Two of
# them plus the status make task_counts' key entry (2 × 1024 + overhead < 2704).
MAX_COLUMN_BYTES = 1024
# A string at an indexed path of data (the paths below): UTF-8 bytes.
MAX_INDEXED_STRING_BYTES = 2048
# Any other JSON value at an indexed path (PATCH may put anything there): bytes of its JSON.
# jsonb spends up to ~6 bytes per JSON byte on an array of small numbers.
MAX_INDEXED_OTHER_BYTES = 256
# Integers anywhere in data: digits. Python's own int <-> str limit (sys.int_max_str_digits),
# which msgspec keeps both ways (a longer one in a request body is invalid JSON, in a direct
# client's data it cannot be encoded); far below Postgres' 131,072.
MAX_INTEGER_DIGITS = 4300

INDEXED_COLUMNS = ("organisation", "type", "hash")
INDEXED_DATA_PATHS = (
    ("boefje", "id"),
    ("input_ooi",),
    ("normalizer", "id"),
    ("raw_data", "boefje_meta", "input_ooi"),
    ("raw_data", "boefje_meta", "id"),
    ("report_recipe_id",),
)
_INDEXED_FIELDS = tuple((path, "data." + ".".join(path)) for path in INDEXED_DATA_PATHS)
_NUL_IN_JSON = b"\\u0000"  # how every JSON encoder writes a NUL (a raw one is invalid JSON)


class TooLarge(BadRequest):
    """A value the history cannot hold; ``field`` names it, ``limit`` is the bound it broke."""

    def __init__(self, field: str, problem: str, limit: int | None = None, prefix: str = "") -> None:
        super().__init__(f"{prefix}{field} {problem}")
        self.field, self.limit = field, limit


def check_columns(values: dict[str, Any], *, prefix: str = "") -> None:
    """Indexed text columns (``INDEXED_COLUMNS``) at most ``MAX_COLUMN_BYTES``; any string
    value free of NUL."""
    for name, value in values.items():
        check_column(name, value, prefix)


def check_column(name: str, value: Any, prefix: str = "") -> None:
    if not isinstance(value, str):
        return
    if "\x00" in value:
        _check_text(name, value, prefix)
    if name in INDEXED_COLUMNS and len(value) * 4 > MAX_COLUMN_BYTES and _longer_than(value, MAX_COLUMN_BYTES):
        raise TooLarge(name, f"must be at most {MAX_COLUMN_BYTES} bytes (UTF-8)", MAX_COLUMN_BYTES, prefix)


def check_data(data: Any, encoded: bytes | None = None, *, prefix: str = "") -> bytes:
    """``data`` as the history would store it, or TooLarge: at most ``MAX_DATA_BYTES`` of
    JSON (integers of at most ``MAX_INTEGER_DIGITS`` digits), no NUL in any string or key,
    indexed paths within their bounds. ``encoded``: its JSON, when the caller has it.
    Returns the JSON."""
    if encoded is None:
        encoded = encode(data, "data", prefix)
    if len(encoded) > MAX_DATA_BYTES:
        raise TooLarge("data", f"must be at most {MAX_DATA_BYTES} bytes of JSON", MAX_DATA_BYTES, prefix)
    # Walking every value is only needed when a NUL may be there (a literal "\\u0000" text
    # also matches: the walk tells).
    if _NUL_IN_JSON in encoded:
        _check_values(msgspec.json.decode(encoded), prefix)
    if isinstance(data, dict):
        _check_indexed(data, prefix)
    return encoded


def encode(value: Any, field: str, prefix: str = "") -> bytes:
    """JSON of a caller's value; a string no UTF-8 can hold (a lone surrogate) is a 400."""
    try:
        return msgspec.json.encode(value)
    except ValueError as exc:  # an int past sys.int_max_str_digits (UnicodeEncodeError is one too)
        if isinstance(exc, UnicodeEncodeError):
            raise TooLarge(field, "cannot be stored as JSON (text no UTF-8 can hold)", prefix=prefix) from None
        limit = MAX_INTEGER_DIGITS
        raise TooLarge(field, f"must hold no integer of more than {limit} digits", limit, prefix) from None
    except (TypeError, RecursionError) as exc:
        raise TooLarge(field, f"cannot be stored as JSON ({type(exc).__name__})", prefix=prefix) from None


def _check_indexed(data: dict[str, Any], prefix: str) -> None:
    for path, field in _INDEXED_FIELDS:
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                break
        if value is None:
            continue
        if isinstance(value, str):
            if len(value) * 4 > MAX_INDEXED_STRING_BYTES and _longer_than(value, MAX_INDEXED_STRING_BYTES):
                limit = MAX_INDEXED_STRING_BYTES
                raise TooLarge(field, f"must be at most {limit} bytes (UTF-8): Postgres indexes it", limit, prefix)
        elif len(msgspec.json.encode(value)) > MAX_INDEXED_OTHER_BYTES:
            limit = MAX_INDEXED_OTHER_BYTES
            raise TooLarge(field, f"must be a string, or at most {limit} bytes of JSON: Postgres indexes it", limit, prefix)


def _check_values(document: Any, prefix: str) -> None:
    for path, value in _walk(document):
        if isinstance(value, str):
            _check_text(path, value, prefix)


def _walk(document: Any) -> Iterator[tuple[str, Any]]:
    """(path, value) of every scalar in a JSON document, and of every key (as "a key of"
    its object); iterative, so any depth is fine."""
    stack: list[tuple[str, Any]] = [("data", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                yield f"a key of {path}", key
                stack.append((f"{path}.{key}", child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(value))
        else:
            yield path, value


def _check_text(field: str, value: str, prefix: str) -> None:
    if "\x00" in value:
        raise TooLarge(field.replace("\x00", "\\u0000"), "must not contain NUL (\\u0000) characters", prefix=prefix)


def _longer_than(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes of UTF-8 (no character takes more
    than 4: most texts are decided without encoding them)."""
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
