"""Katalogus: organisations, plugins and boefje configs (for cross-organisation dedup).

Cache policy (``cache_ttl``, default 30 s; 0 turns it off):
- ``get_organisations()``: the whole list, for ``cache_ttl``.
- ``get_plugins(org, plugin_type, consumes)``: per (org, type, consumes), for ``cache_ttl``.
  Every scan-profile mutation and raw file asks this; a plugin enabled or disabled in the UI
  takes effect within ``cache_ttl``. ``fresh=True`` skips and refreshes the entry (for the
  periodic "new boefjes" sweep, which must see changes at once).
Concurrent misses for one key share one request. Not cached, because they decide whether a
schedule or a dedup twin still runs: ``get_plugin()`` and ``get_configs()``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from redisched.clients.http.base import ServiceClient, TTLCache, drop_none


class Organisation(msgspec.Struct, kw_only=True):
    id: str
    name: str | None = None
    deduplicate: bool = True


class Plugin(msgspec.Struct, kw_only=True):
    """A boefje, normalizer or bit as Katalogus lists it; unknown fields are ignored.

    ``consumes`` is always a list (Katalogus sends a bare string for bits). ``interval`` is in
    minutes. ``run_on`` holds ``create``/``update``. ``rate_limit_group`` (a template with
    ``{input_ooi}``, ``{object_type}``, ...) and ``rate_limit_interval`` (seconds): the
    manifest's shared cooldown of upstream PR #5313 (the interval's name is this service's
    reading; see README, Limits per boefje group). Shared by the cache: do not mutate."""

    id: str
    type: str
    enabled: bool = False
    name: str | None = None
    version: str | None = None
    scan_level: int = 1
    consumes: list[str] | str = msgspec.field(default_factory=list)
    produces: list[str] = msgspec.field(default_factory=list)
    cron: str | None = None
    interval: int | None = None
    run_on: list[str] | None = None
    oci_image: str | None = None
    deduplicate: bool = True
    # Any: checked by limit_rules.plugin_rule, so one plugin's bad value leaves that plugin
    # unlimited instead of failing the decoding of the organisation's whole plugin list.
    rate_limit_group: Any = None
    rate_limit_interval: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.consumes, str):
            self.consumes = [self.consumes]


class BoefjeConfig(msgspec.Struct, kw_only=True):
    """A boefje's settings in one organisation; with ``with_duplicates`` the configs of other
    organisations with equal settings come in ``duplicates``."""

    id: int
    boefje_id: str
    enabled: bool
    organisation_id: str
    settings: dict = msgspec.field(default_factory=dict)
    duplicates: list[BoefjeConfig] = msgspec.field(default_factory=list)


class KatalogusClient(ServiceClient):
    name = "katalogus"

    def __init__(self, base_url: str | None, *, cache_ttl: float = 30.0, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._organisations: TTLCache[None, dict[str, Organisation]] = TTLCache(cache_ttl)
        self._plugins: TTLCache[tuple[str, str | None, str | None], list[Plugin]] = TTLCache(cache_ttl)

    async def get_organisations(self) -> dict[str, Organisation]:
        """Organisation id → organisation (Katalogus answers a dict keyed by id)."""
        return await self._organisations.get(None, self._fetch_organisations)

    async def get_plugins(
        self,
        organisation_id: str,
        plugin_type: str | None = None,
        consumes: str | None = None,
        *,
        fresh: bool = False,
    ) -> list[Plugin]:
        """The organisation's plugins, optionally of one type and consuming one object type or
        mime type. Unknown organisation (404) → []."""
        key = (organisation_id, plugin_type, consumes)
        if fresh:
            self._plugins.invalidate(key)
        plugins = await self._plugins.get(key, lambda: self._fetch_plugins(*key))
        return list(plugins)

    async def get_plugin(self, organisation_id: str, plugin_id: str) -> Plugin | None:
        return await self._get(f"/v1/organisations/{organisation_id}/plugins/{plugin_id}", Plugin)

    async def get_configs(
        self,
        organisation_id: str,
        boefje_id: str | None = None,
        enabled: bool | None = None,
        with_duplicates: bool = False,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[BoefjeConfig]:
        """``GET /v1/configs`` with mula's parameters. Katalogus fills ``duplicates`` only when
        organisation, boefje and ``with_duplicates`` are all given (and its dedup is on)."""
        params = drop_none(
            {
                "organisation_id": organisation_id,
                "boefje_id": boefje_id,
                "enabled": enabled,
                "with_duplicates": with_duplicates,
                "offset": offset,
                "limit": limit,
            }
        )
        return await self._get("/v1/configs", list[BoefjeConfig], params) or []

    async def _fetch_organisations(self) -> dict[str, Organisation]:
        return await self._get("/v1/organisations", dict[str, Organisation]) or {}

    async def _fetch_plugins(
        self, organisation_id: str, plugin_type: str | None, consumes: str | None
    ) -> list[Plugin]:
        params = drop_none({"plugin_type": plugin_type, "consumes": consumes})
        return await self._get(f"/v1/organisations/{organisation_id}/plugins", list[Plugin], params) or []
