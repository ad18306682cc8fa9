"""Octopoes: the objects (OOIs) of an organisation and their scan levels. Nothing is cached:
object existence and scan level are what a task decision rests on.

Health is per organisation, as in mula: Octopoes' ``/{org}/health`` checks that
organisation's XTDB node, while its root ``/health`` only says the process is up. The
organisations come from ``organisation_ids`` (in practice the Katalogus client's cached
list); with none known, or when that source fails, the root ``/health`` is probed instead
(mula answers healthy without asking anything then).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec

from redisched.clients.http.base import ExternalServiceError, ServiceClient
from redisched.models import utcnow

log = logging.getLogger(__name__)

PAGE_SIZE = 1000

OrganisationIds = Callable[[], Awaitable[Iterable[str]]]


class ScanProfile(msgspec.Struct, kw_only=True):
    level: int
    reference: str | None = None
    scan_profile_type: str | None = None


class OOI(msgspec.Struct, kw_only=True):
    primary_key: str
    object_type: str
    scan_profile: ScanProfile | None = None

    @property
    def scan_level(self) -> int:
        return self.scan_profile.level if self.scan_profile else 0


class ObjectPage(msgspec.Struct):
    count: int
    items: list[OOI]


class OctopoesClient(ServiceClient):
    name = "octopoes"

    def __init__(self, base_url: str | None, *, organisation_ids: OrganisationIds | None = None, **options: Any):
        super().__init__(base_url, **options)
        self._organisation_ids = organisation_ids

    async def iter_objects(
        self,
        organisation_id: str,
        object_types: Iterable[str],
        scan_levels: Iterable[int],
        valid_time: datetime | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[OOI]:
        """Every object of the given types at one of the given scan levels, fetched page by
        page, all pages at the same ``valid_time``. Unknown organisation (404) → nothing."""
        params: dict[str, Any] = {
            "types": list(object_types),
            "scan_level": list(scan_levels),
            "offset": 0,
            "limit": page_size,
            "valid_time": (valid_time or utcnow()).isoformat(),
        }
        count = 1
        while params["offset"] < count:
            page = await self._get(f"/{organisation_id}/objects", ObjectPage, params)
            if page is None:
                return
            count = page.count
            params["offset"] += page_size
            for ooi in page.items:
                yield ooi

    async def get_object(self, organisation_id: str, reference: str, valid_time: datetime | None = None) -> OOI | None:
        params = {"reference": reference, "valid_time": (valid_time or utcnow()).isoformat()}
        return await self._get(f"/{organisation_id}/object", OOI, params)

    async def get_object_clients(
        self, reference: str, clients: Iterable[str], valid_time: datetime | None = None
    ) -> dict[str, OOI]:
        """Those of ``clients`` (organisations) that hold ``reference``, with their copy of it."""
        clients = sorted(set(clients))
        if not clients:
            return {}
        params = {"reference": reference, "clients": clients, "valid_time": (valid_time or utcnow()).isoformat()}
        return await self._get("/object-clients", dict[str, OOI], params) or {}

    async def healthy(self) -> bool:
        if not self.configured:
            return False
        organisation_ids = await self._known_organisation_ids()
        if not organisation_ids:
            return await self._probe(self.health_path)
        results = await asyncio.gather(*(self._probe(f"/{org}/health") for org in organisation_ids))
        return all(results)

    async def _known_organisation_ids(self) -> list[str]:
        if self._organisation_ids is None:
            return []
        try:
            return list(await self._organisation_ids())
        except ExternalServiceError as exc:
            log.warning("octopoes health: organisations unknown (%s), probing /health", exc)
            return []
