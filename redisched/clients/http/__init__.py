"""Async clients for the OpenKAT services the schedulers ask: Katalogus, Octopoes and Bytes.

    clients = ServiceClients.from_settings(Settings())
    plugins = await clients.katalogus.get_plugins("org1", "boefje", consumes="Hostname")
    externals = await clients.health()  # {"katalogus": bool, "octopoes": bool, "bytes": bool}
    await clients.aclose()

Retries, errors and the "not configured" state: ``base``. Cache policy: ``katalogus``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redisched.clients.http.base import (
    AuthenticationError,
    ExternalServiceError,
    InvalidResponse,
    ServiceClient,
    ServiceNotConfigured,
    ServiceResponseError,
    ServiceUnavailable,
)
from redisched.clients.http.bytes import BytesClient
from redisched.clients.http.katalogus import BoefjeConfig, KatalogusClient, Organisation, Plugin
from redisched.clients.http.octopoes import OOI, OctopoesClient, ScanProfile
from redisched.config import Settings

__all__ = [
    "OOI",
    "AuthenticationError",
    "BoefjeConfig",
    "BytesClient",
    "ExternalServiceError",
    "InvalidResponse",
    "KatalogusClient",
    "OctopoesClient",
    "Organisation",
    "Plugin",
    "ScanProfile",
    "ServiceClient",
    "ServiceClients",
    "ServiceNotConfigured",
    "ServiceResponseError",
    "ServiceUnavailable",
]


@dataclass(frozen=True)
class ServiceClients:
    katalogus: KatalogusClient
    octopoes: OctopoesClient
    bytes: BytesClient

    @classmethod
    def from_settings(
        cls, settings: Settings, *, cache_ttl: float = 30.0, max_attempts: int = 3, backoff: float = 0.5
    ) -> ServiceClients:
        retry = {"max_attempts": max_attempts, "backoff": backoff}
        katalogus = KatalogusClient(
            settings.katalogus_api,
            cache_ttl=cache_ttl,
            timeout=settings.katalogus_request_timeout,
            pool_connections=settings.katalogus_pool_connections,
            **retry,
        )
        octopoes = OctopoesClient(
            settings.octopoes_api,
            organisation_ids=katalogus.get_organisations,
            timeout=settings.octopoes_request_timeout,
            pool_connections=settings.octopoes_pool_connections,
            **retry,
        )
        bytes_client = BytesClient(
            settings.bytes_api,
            username=settings.bytes_username,
            password=settings.bytes_password,
            timeout=settings.bytes_request_timeout,
            pool_connections=settings.bytes_pool_connections,
            **retry,
        )
        return cls(katalogus, octopoes, bytes_client)

    def _all(self) -> tuple[ServiceClient, ...]:
        return (self.katalogus, self.octopoes, self.bytes)

    async def health(self) -> dict[str, bool]:
        """The ``externals`` of ``GET /health?externals=true``; probes run concurrently."""
        results = await asyncio.gather(*(client.healthy() for client in self._all()))
        return {client.name: healthy for client, healthy in zip(self._all(), results)}

    def unconfigured(self) -> list[str]:
        """Names of the services without a base URL, for the schedulers to report idling."""
        return [client.name for client in self._all() if not client.configured]

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._all()))
