"""mula's wording for a payload that does not validate: pydantic's ``N validation error(s) for
BoefjeTask ...`` text, which mula puts in a 400's ``detail`` (a schedule's ``data``); and for a
cron expression its Schedule model refuses.

The payload structs (models.py) stay msgspec's, for speed; on the rare failure the same
``data`` is validated again by a pydantic model built from the struct's fields (same names,
types and defaults; the keys mula requires although they may be null are required), so the
text is pydantic's own, every error listed, rather than an imitation of it.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any

import msgspec
import pydantic

from redisched.models import REQUIRED_NULLABLE, SCHEDULERS


def pydantic_wording(scheduler_id: str, data: Any) -> str | None:
    """pydantic's message for ``data`` as the scheduler's payload; None when pydantic accepts it."""
    try:
        _mirror(scheduler_id).model_validate(data)
    except pydantic.ValidationError as exc:
        return str(exc)
    return None


def cron_wording(expression: str) -> str:
    """pydantic's message for mula's Schedule model refusing ``expression`` (which the caller
    found invalid)."""
    try:
        _SCHEDULE.model_validate({"schedule": expression})
    except pydantic.ValidationError as exc:
        return str(exc)
    raise AssertionError("the cron refusal model accepted an expression")


def _refuse_cron(value: str) -> str:
    raise ValueError(f"Invalid cron expression: {value}")


_SCHEDULE = pydantic.create_model(
    "Schedule", schedule=(str, ...), __validators__={"cron": pydantic.field_validator("schedule")(_refuse_cron)}
)


@cache
def _mirror(scheduler_id: str) -> type[pydantic.BaseModel]:
    root = SCHEDULERS[scheduler_id].payload
    return _model(root, frozenset(_required(root, REQUIRED_NULLABLE.get(scheduler_id, ()))))


def _required(root: type, paths: tuple[tuple[str, ...], ...]) -> set[tuple[type, str]]:
    """(struct, field) for each path: the field's struct is found through the type hints."""
    required = set()
    for path in paths:
        kind = root
        for key in path[:-1]:
            kind = _struct_in(typing.get_type_hints(kind)[key])
        required.add((kind, path[-1]))
    return required


def _model(struct: type, required: frozenset[tuple[type, str]]) -> type[pydantic.BaseModel]:
    hints = typing.get_type_hints(struct)
    fields: dict[str, Any] = {}
    for info in msgspec.structs.fields(struct):
        kind = _translated(hints[info.name], required)
        if (struct, info.name) in required or info.required:
            fields[info.name] = (kind, ...)
        elif info.default_factory is not msgspec.NODEFAULT:
            fields[info.name] = (kind, pydantic.Field(default_factory=info.default_factory))
        else:
            fields[info.name] = (kind, info.default)
    return pydantic.create_model(struct.__name__, **fields)


def _translated(kind: Any, required: frozenset[tuple[type, str]]) -> Any:
    """A type hint with every Struct in it replaced by its pydantic model."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return _model(kind, required)
    args = typing.get_args(kind)
    if not args:
        return kind
    translated = tuple(_translated(arg, required) for arg in args)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[translated]
    return origin[translated]


def _struct_in(kind: Any) -> type:
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    return next(_struct_in(arg) for arg in typing.get_args(kind) if _has_struct(arg))


def _has_struct(kind: Any) -> bool:
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return True
    return any(_has_struct(arg) for arg in typing.get_args(kind))
