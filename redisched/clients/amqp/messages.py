"""The events OpenKAT publishes to the scheduler, as msgspec Structs.

Unknown fields are ignored (msgspec's default), so newer Octopoes and Bytes versions that add
fields still decode.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from msgspec import Struct

from redisched.models import RawData

SCAN_PROFILE_MUTATIONS = "scan_profile_mutations"
RAW_FILE_RECEIVED = "raw_file_received"

M = TypeVar("M")


class MutationOperation(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class ScanProfile(Struct, kw_only=True):
    level: int
    reference: str | None = None
    scan_profile_type: str | None = None


class MutatedObject(Struct, kw_only=True):
    primary_key: str
    object_type: str
    scan_profile: ScanProfile


class ScanProfileMutation(Struct, kw_only=True):
    """Octopoes' event on ``scan_profile_mutations``; ``value`` is null for a delete."""

    operation: MutationOperation
    primary_key: str
    value: MutatedObject | None = None
    client_id: str


class RawFileReceived(Struct, kw_only=True):
    """Bytes' event on ``raw_file_received``."""

    organization: str
    raw_data: RawData


def json_handler(model: type[M], handle: Callable[[M], Awaitable[None]]) -> Callable[[bytes], Awaitable[None]]:
    """Adapt ``handle(message)`` to a listener's ``handle(body)``.

    A body that is not valid JSON for ``model`` raises ``msgspec.DecodeError``, which the
    listener treats as a poison message.
    """
    decoder = msgspec.json.Decoder(model)

    async def handle_body(body: bytes) -> None:
        await handle(decoder.decode(body))

    return handle_body
