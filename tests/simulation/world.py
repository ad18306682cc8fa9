"""A fake OpenKAT world: organisations, plugins, objects with scan levels, boefje configs that
duplicate across organisations, and Bytes' boefje run history.

The unit tests ask it through plain Python fakes of the Katalogus, Octopoes and Bytes clients
(``world.clients()``); the simulation serves it over HTTP (``katalogus_app`` ...), so the real
clients talk to it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redisched.clients.http import OOI, BoefjeConfig, Organisation, Plugin, ScanProfile
from redisched.models import Boefje, BoefjeMeta


def boefje(boefje_id: str, consumes: Iterable[str] = ("Hostname",), **fields) -> Plugin:
    fields.setdefault("enabled", True)
    return Plugin(id=boefje_id, type="boefje", name=boefje_id, consumes=list(consumes), **fields)


def normalizer(normalizer_id: str, consumes: Iterable[str], **fields) -> Plugin:
    fields.setdefault("enabled", True)
    return Plugin(id=normalizer_id, type="normalizer", name=normalizer_id, consumes=list(consumes), **fields)


def ooi(primary_key: str, level: int | None) -> OOI:
    object_type = primary_key.split("|", 1)[0]
    profile = ScanProfile(level=level) if level is not None else None
    return OOI(primary_key=primary_key, object_type=object_type, scan_profile=profile)


@dataclass
class World:
    plugins: dict[str, dict[str, Plugin]] = field(default_factory=dict)  # org -> id -> plugin
    objects: dict[str, dict[str, OOI]] = field(default_factory=dict)  # org -> primary key -> object
    duplicates: dict[str, set[str]] = field(default_factory=dict)  # boefje id -> orgs sharing a config
    runs: list[BoefjeMeta] = field(default_factory=list)  # Bytes' boefje metas, oldest first
    requests: list[str] = field(default_factory=list)  # what the clients asked, for assertions

    # --- building it -----------------------------------------------------------------------

    def add_plugin(self, organisation: str, plugin: Plugin) -> None:
        self.plugins.setdefault(organisation, {})[plugin.id] = plugin
        self.objects.setdefault(organisation, {})

    def set_enabled(self, organisation: str, plugin_id: str, enabled: bool) -> None:
        self.plugins[organisation][plugin_id] = msgspec.structs.replace(
            self.plugins[organisation][plugin_id], enabled=enabled
        )

    def add_object(self, organisation: str, primary_key: str, level: int | None) -> OOI:
        self.plugins.setdefault(organisation, {})
        added = self.objects.setdefault(organisation, {})[primary_key] = ooi(primary_key, level)
        return added

    def record_run(
        self, boefje_id: str, input_ooi: str | None, organisation: str, started: datetime, ended: datetime | None
    ) -> None:
        self.runs.append(
            BoefjeMeta(
                id=uuid.uuid4(),
                boefje=Boefje(id=boefje_id),
                input_ooi=input_ooi,
                organization=organisation,
                started_at=started,
                ended_at=ended,
            )
        )

    # --- answering -------------------------------------------------------------------------

    def organisations(self) -> dict[str, Organisation]:
        return {org: Organisation(id=org, name=org) for org in sorted(self.plugins)}

    def plugins_of(self, organisation: str, plugin_type: str | None, consumes: str | None) -> list[Plugin]:
        return [
            plugin
            for plugin in self.plugins.get(organisation, {}).values()
            if plugin_type in (None, plugin.type) and (consumes is None or consumes in plugin.consumes)
        ]

    def configs(self, organisation: str, boefje_id: str) -> list[BoefjeConfig]:
        sharing = self.duplicates.get(boefje_id, set())
        if organisation not in sharing:
            return []
        twins = [BoefjeConfig(id=i, boefje_id=boefje_id, enabled=True, organisation_id=o) for i, o in enumerate(sorted(sharing))]
        return [BoefjeConfig(id=0, boefje_id=boefje_id, enabled=True, organisation_id=organisation, duplicates=twins)]

    def objects_of(self, organisation: str, types: Iterable[str], levels: Iterable[int]) -> list[OOI]:
        types, levels = set(types), set(levels)
        return [
            each
            for _, each in sorted(self.objects.get(organisation, {}).items())
            if each.object_type in types and each.scan_level in levels and each.scan_profile is not None
        ]

    def object_clients(self, reference: str, clients: Iterable[str]) -> dict[str, OOI]:
        return {org: self.objects[org][reference] for org in clients if reference in self.objects.get(org, {})}

    def last_run(self, boefje_id: str, input_ooi: str | None, organisation: str) -> BoefjeMeta | None:
        for run in reversed(self.runs):
            if (run.boefje.id, run.input_ooi, run.organization) == (boefje_id, input_ooi, organisation):
                return run
        return None

    # --- as Python fakes of the clients ----------------------------------------------------

    def clients(self) -> tuple[FakeKatalogus, FakeOctopoes, FakeBytes]:
        return FakeKatalogus(self), FakeOctopoes(self), FakeBytes(self)


class FakeKatalogus:
    def __init__(self, world: World) -> None:
        self.world = world

    async def get_organisations(self) -> dict[str, Organisation]:
        return self.world.organisations()

    async def get_plugins(self, organisation_id, plugin_type=None, consumes=None, *, fresh=False) -> list[Plugin]:
        return self.world.plugins_of(organisation_id, plugin_type, consumes)

    async def get_plugin(self, organisation_id: str, plugin_id: str) -> Plugin | None:
        return self.world.plugins.get(organisation_id, {}).get(plugin_id)

    async def get_configs(self, organisation_id, boefje_id=None, enabled=None, with_duplicates=False, **_) -> list:
        self.world.requests.append(f"configs {organisation_id} {boefje_id}")
        return self.world.configs(organisation_id, boefje_id)


class FakeOctopoes:
    def __init__(self, world: World) -> None:
        self.world = world

    async def iter_objects(self, organisation_id, object_types, scan_levels, valid_time=None) -> AsyncIterator[OOI]:
        for each in self.world.objects_of(organisation_id, object_types, scan_levels):
            yield each

    async def get_object(self, organisation_id: str, reference: str, valid_time=None) -> OOI | None:
        return self.world.objects.get(organisation_id, {}).get(reference)

    async def get_object_clients(self, reference: str, clients, valid_time=None) -> dict[str, OOI]:
        return self.world.object_clients(reference, clients)


class FakeBytes:
    def __init__(self, world: World) -> None:
        self.world = world

    async def get_last_run_boefje(self, boefje_id: str, input_ooi: str | None, organization: str) -> BoefjeMeta | None:
        self.world.requests.append(f"bytes {boefje_id} {input_ooi} {organization}")
        return self.world.last_run(boefje_id, input_ooi, organization)


# --- over HTTP, for the simulation -----------------------------------------------------------


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def _health(_request: Request) -> Response:
    return JSONResponse({"healthy": True})


def katalogus_app(world: World) -> Starlette:
    async def organisations(_request: Request) -> Response:
        return _json(world.organisations())

    async def plugins(request: Request) -> Response:
        query = request.query_params
        found = world.plugins_of(request.path_params["org"], query.get("plugin_type"), query.get("consumes"))
        return _json(found)

    async def plugin(request: Request) -> Response:
        found = world.plugins.get(request.path_params["org"], {}).get(request.path_params["plugin_id"])
        return _json(found) if found is not None else _json({"detail": "not found"}, 404)

    async def configs(request: Request) -> Response:
        query = request.query_params
        return _json(world.configs(query["organisation_id"], query.get("boefje_id")))

    return Starlette(
        routes=[
            Route("/health", _health),
            Route("/v1/organisations", organisations),
            Route("/v1/organisations/{org}/plugins", plugins),
            Route("/v1/organisations/{org}/plugins/{plugin_id}", plugin),
            Route("/v1/configs", configs),
        ]
    )


def octopoes_app(world: World) -> Starlette:
    async def objects(request: Request) -> Response:
        query = request.query_params
        world.requests.append(f"objects {request.path_params['org']} {','.join(query.getlist('types'))}")
        levels = [int(level) for level in query.getlist("scan_level")]
        found = world.objects_of(request.path_params["org"], query.getlist("types"), levels)
        offset, limit = int(query["offset"]), int(query["limit"])
        return _json({"count": len(found), "items": found[offset : offset + limit]})

    async def one_object(request: Request) -> Response:
        found = world.objects.get(request.path_params["org"], {}).get(request.query_params["reference"])
        return _json(found) if found is not None else _json({"detail": "not found"}, 404)

    async def object_clients(request: Request) -> Response:
        query = request.query_params
        return _json(world.object_clients(query["reference"], query.getlist("clients")))

    return Starlette(
        routes=[
            Route("/health", _health),
            Route("/object-clients", object_clients),
            Route("/{org}/health", _health),
            Route("/{org}/objects", objects),
            Route("/{org}/object", one_object),
        ]
    )


def bytes_app(world: World) -> Starlette:
    async def token(_request: Request) -> Response:
        return _json({"access_token": "sim-token", "token_type": "bearer"})

    async def boefje_meta(request: Request) -> Response:
        if request.headers.get("authorization") != "bearer sim-token":
            return _json({"detail": "unauthorized"}, 401)
        query = request.query_params
        found = world.last_run(query["boefje_id"], query.get("input_ooi"), query["organization"])
        return _json([found] if found is not None else [])

    return Starlette(
        routes=[
            Route("/health", _health),
            Route("/token", token, methods=["POST"]),
            Route("/bytes/boefje_meta", boefje_meta),
        ]
    )
