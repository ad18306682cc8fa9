"""Request validation errors in FastAPI's shape, so mula's clients read them unchanged.

A 422 answers ``{"detail": [{"type", "loc", "msg", "input"}, ...]}`` with pydantic's ``type``
and ``msg`` strings. msgspec reports the first problem as a message and a ``$.a[0].b`` path;
``from_msgspec`` turns that into the pydantic error the same input gets from mula.
"""

from __future__ import annotations

import enum
import re
import string
from typing import Any

import msgspec

from redisched.errors import Kind, SchedulerError

_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"field `(.*)`$", re.DOTALL)
_GOT = re.compile(r"got `(\w+)`")


class InvalidRequest(SchedulerError):
    """A 422: the request does not validate; ``errors`` is FastAPI's list."""

    kind = Kind.INVALID_REQUEST

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("request validation failed")
        self.errors = errors


def error(kind: str, loc: list[Any], msg: str, value: Any, **ctx: Any) -> dict[str, Any]:
    entry = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        entry["ctx"] = ctx
    return entry


def missing(loc: list[Any], value: Any = None) -> dict[str, Any]:
    return error("missing", loc, "Field required", value)


def json_invalid(exc: msgspec.DecodeError | RecursionError) -> dict[str, Any]:
    position = re.search(r"\(byte (\d+)\)", str(exc))
    loc = ["body", int(position.group(1)) if position else 0]
    return error("json_invalid", loc, "JSON decode error", {}, error=str(exc))


def from_msgspec(exc: msgspec.ValidationError, document: Any, target: type, root: str = "body") -> dict[str, Any]:
    """The pydantic error for the first problem msgspec found converting ``document``."""
    match = _AT.match(str(exc))
    message, path = match.group("message"), _path(match.group("path") or "")
    here = _lookup(document, path)
    loc = [root, *path]
    named = _FIELD.search(message)
    if message.startswith("Object missing required field"):
        return missing([*loc, named.group(1)], here)
    if message.startswith("Object contains unknown field"):
        field = named.group(1)
        return error("extra_forbidden", [*loc, field], "Extra inputs are not permitted", _lookup(here, [field]))
    if message.startswith("Invalid enum value"):
        expected = _expected(_enum_of(target, path))
        return error("enum", loc, f"Input should be {expected}", here, expected=expected)
    if message.startswith("Invalid UUID"):
        return uuid_error(loc, here)
    if message.startswith("Invalid RFC3339"):
        return error("datetime_from_date_parsing", loc, "Input should be a valid datetime or date", here)
    if message.startswith("Expected"):
        return _type_error(message, loc, here, at_root=not path)
    return error("value_error", loc, message, here)


def _type_error(message: str, loc: list[Any], value: Any, *, at_root: bool) -> dict[str, Any]:
    expected = message.split("`")[1]
    got = _GOT.search(message)
    got = got.group(1) if got else ""
    if expected.startswith("object"):
        if at_root:
            return error("model_attributes_type", loc, "Input should be a valid dictionary or object to extract fields from", value)
        return error("dict_type", loc, "Input should be a valid dictionary", value)
    if expected.startswith("int"):
        if got == "str":
            return error("int_parsing", loc, "Input should be a valid integer, unable to parse string as an integer", value)
        if got == "float":
            return error("int_from_float", loc, "Input should be a valid integer, got a number with a fractional part", value)
        return error("int_type", loc, "Input should be a valid integer", value)
    if expected.startswith("str"):
        return error("string_type", loc, "Input should be a valid string", value)
    if expected.startswith("bool"):
        return error("bool_type", loc, "Input should be a valid boolean", value)
    if expected.startswith("array"):
        return error("list_type", loc, "Input should be a valid list", value)
    return error("value_error", loc, message, value)


def uuid_error(loc: list[Any], value: Any) -> dict[str, Any]:
    """pydantic's ``uuid_parsing`` (or ``uuid_type`` for a non-string), with its reason."""
    if not isinstance(value, str):
        return error("uuid_type", loc, "UUID input should be a string, bytes or UUID object", value)
    allowed = set(string.hexdigits) | {"-"}
    bad = next(((i, c) for i, c in enumerate(value) if c not in allowed), None)
    if bad is not None:
        reason = (
            "invalid character: expected an optional prefix of `urn:uuid:` followed by "
            f"[0-9a-fA-F-], found `{bad[1]}` at {bad[0] + 1}"
        )
    else:
        reason = f"invalid length: expected length 32 for simple format, found {len(value.replace('-', ''))}"
    return error("uuid_parsing", loc, f"Input should be a valid UUID, {reason}", value, error=reason)


def enum_error(loc: list[Any], value: Any, kind: type[enum.Enum]) -> dict[str, Any]:
    expected = _expected(kind)
    return error("enum", loc, f"Input should be {expected}", value, expected=expected)


def _expected(kind: type[enum.Enum] | None) -> str:
    values = [f"'{member.value}'" for member in kind] if kind is not None else []
    if len(values) < 2:
        return "".join(values)
    return f"{', '.join(values[:-1])} or {values[-1]}"


def _enum_of(target: type, path: list[Any]) -> type[enum.Enum] | None:
    """The Enum type of a top-level Struct field (the only place the API has enums)."""
    if len(path) != 1:
        return None
    for field in msgspec.inspect.type_info(target).fields:
        if field.name == path[0]:
            kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
            return next((k.cls for k in kinds if isinstance(k, msgspec.inspect.EnumType)), None)
    return None


def _path(text: str) -> list[str | int]:
    return [name if name is not None else int(index) for name, index in _PATH_PART.findall(text)]


def _lookup(document: Any, path: list[str | int]) -> Any:
    for part in path:
        try:
            document = document[part]
        except (KeyError, IndexError, TypeError):
            return None
    return document
