"""The Katalogus, Octopoes and Bytes clients against small fakes of those services, served by
uvicorn on 127.0.0.1 (random free ports) in the test's event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from redisched.clients.http import (
    AuthenticationError,
    BytesClient,
    InvalidResponse,
    KatalogusClient,
    OctopoesClient,
    ServiceClients,
    ServiceNotConfigured,
    ServiceResponseError,
    ServiceUnavailable,
)
from redisched.config import Settings
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(20)

FAST_RETRY = {"timeout": 2.0, "max_attempts": 3, "backoff": 0.01}


# --- fakes -------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class Fake:
    """An ASGI app that records every request and can be told to be slow or to fail."""

    def __init__(self, routes: list[Route]) -> None:
        self.app = Starlette(routes=routes)
        self.reset()

    def reset(self) -> None:
        self.calls: list[Call] = []
        self.delay = 0.0
        self.fail_with: list[int] = []  # statuses to answer, one per request, before behaving

    def paths(self) -> list[str]:
        return [call.path for call in self.calls]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = {key.decode(): value.decode() for key, value in scope["headers"]}
            query = parse_qs(scope["query_string"].decode(), keep_blank_values=True)
            self.calls.append(Call(scope["method"], scope["path"], query, headers))
            await asyncio.sleep(self.delay)
            if self.fail_with:
                await JSONResponse({"detail": "failing on purpose"}, self.fail_with.pop(0))(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def healthy(_: Request) -> JSONResponse:
    return JSONResponse({"service": "fake", "healthy": True})


ORGANISATIONS = {
    "org1": {"id": "org1", "name": "Organisation 1", "deduplicate": True},
    "org2": {"id": "org2", "name": "Organisation 2", "deduplicate": False},
}
PLUGINS = [
    {"id": "dns-records", "type": "boefje", "enabled": True, "name": "DNS records", "scan_level": 1,
     "consumes": ["Hostname"], "produces": ["boefje/dns-records"], "interval": 60, "run_on": None,
     "oci_image": None, "boefje_schema": {}, "static": True, "deduplicate": True,
     "rate_limit_group": "dns:{object_type}", "rate_limit_interval": 0.5},
    {"id": "nmap", "type": "boefje", "enabled": False, "scan_level": 2, "consumes": ["IPAddressV4", "IPAddressV6"],
     "produces": [], "cron": "0 * * * *", "run_on": ["create", "update"], "oci_image": "ghcr.io/minvws/nmap:latest"},
    {"id": "kat_dns_normalize", "type": "normalizer", "enabled": True, "consumes": ["boefje/dns-records"],
     "produces": ["Hostname"]},
    {"id": "check-hostname", "type": "bit", "enabled": True, "consumes": "Hostname", "produces": ["Finding"],
     "parameters": []},
]


def plugin_matches(plugin: dict, plugin_type: str | None, consumes: str | None) -> bool:
    consumed = plugin["consumes"] if isinstance(plugin["consumes"], list) else [plugin["consumes"]]
    return (plugin_type is None or plugin["type"] == plugin_type) and (consumes is None or consumes in consumed)


async def list_plugins(request: Request) -> JSONResponse:
    if request.path_params["org"] not in ORGANISATIONS:
        return JSONResponse({"detail": "Organisation not found"}, 404)
    plugin_type, consumes = request.query_params.get("plugin_type"), request.query_params.get("consumes")
    return JSONResponse([p for p in PLUGINS if plugin_matches(p, plugin_type, consumes)])


async def get_plugin(request: Request) -> JSONResponse:
    found = [p for p in PLUGINS if p["id"] == request.path_params["plugin_id"]]
    return JSONResponse(found[0]) if found else JSONResponse({"detail": "Plugin not found"}, 404)


def config(config_id: int, organisation_id: str) -> dict:
    return {"id": config_id, "boefje_id": "dns-records", "enabled": True, "organisation_id": organisation_id,
            "settings": {"RESOLVER": "9.9.9.9"}}


async def list_configs(_: Request) -> JSONResponse:
    return JSONResponse([config(1, "org1") | {"duplicates": [config(2, "org2"), config(3, "org3")]}])


katalogus = Fake([
    Route("/health", healthy),
    Route("/v1/organisations", lambda _: JSONResponse(ORGANISATIONS)),
    Route("/v1/organisations/{org}/plugins", list_plugins),
    Route("/v1/organisations/{org}/plugins/{plugin_id}", get_plugin),
    Route("/v1/configs", list_configs),
])

OBJECT_COUNT = 2500


def ooi(number: int, level: int = 2) -> dict:
    reference = f"Hostname|internet|host{number}.example"
    return {"object_type": "Hostname", "primary_key": reference, "name": f"host{number}.example",
            "scan_profile": {"scan_profile_type": "declared", "reference": reference, "level": level, "user_id": None}}


async def list_objects(request: Request) -> JSONResponse:
    if request.path_params["org"] != "org1":
        return JSONResponse({"detail": "client not found"}, 404)
    offset, limit = int(request.query_params["offset"]), int(request.query_params["limit"])
    items = [ooi(n) for n in range(offset, min(offset + limit, OBJECT_COUNT))]
    return JSONResponse({"count": OBJECT_COUNT, "items": items})


async def get_object(request: Request) -> JSONResponse:
    reference = request.query_params["reference"]
    if reference == "broken":
        return JSONResponse({"primary_key": 42})
    if reference != ooi(7)["primary_key"]:
        return JSONResponse({"detail": "object not found"}, 404)
    return JSONResponse(ooi(7))


async def object_clients(request: Request) -> JSONResponse:
    holders = {"org1": 2, "org2": 4}
    clients = request.query_params.getlist("clients")
    return JSONResponse({client: ooi(7, holders[client]) for client in clients if client in holders})


octopoes_unhealthy_orgs: set[str] = set()


async def organisation_health(request: Request) -> JSONResponse:
    return JSONResponse({"service": "octopoes", "healthy": request.path_params["org"] not in octopoes_unhealthy_orgs})


octopoes = Fake([
    Route("/health", healthy),
    Route("/object-clients", object_clients),
    Route("/{org}/health", organisation_health),
    Route("/{org}/objects", list_objects),
    Route("/{org}/object", get_object),
])


class BytesState:
    def reset(self) -> None:
        self.logins = 0
        self.valid_tokens: set[str] = set()
        self.refuse_all_tokens = False


bytes_state = BytesState()
BYTES_USER, BYTES_PASSWORD = "scheduler", "s3cret"
META_ID_OLD, META_ID_NEW = "0d6f1f3a-3f5e-4a8b-9a43-5f0b5a1f0001", "0d6f1f3a-3f5e-4a8b-9a43-5f0b5a1f0002"


async def token(request: Request) -> JSONResponse:
    form = parse_qs((await request.body()).decode())
    if form.get("username") != [BYTES_USER] or form.get("password") != [BYTES_PASSWORD]:
        return JSONResponse({"detail": "Incorrect username or password"}, 401)
    bytes_state.logins += 1
    issued = f"token-{bytes_state.logins}"
    bytes_state.valid_tokens.add(issued)
    return JSONResponse({"access_token": issued, "token_type": "bearer", "expires_at": "2030-01-01T00:00:00"})


def boefje_meta(meta_id: str, ended_at: str) -> dict:
    return {"id": meta_id, "boefje": {"id": "dns-records", "version": None}, "input_ooi": "Hostname|internet|a.nl",
            "arguments": {}, "organization": "org1", "runnable_hash": None, "environment": {},
            "started_at": "2025-05-01T08:00:00Z", "ended_at": ended_at}


async def list_boefje_meta(request: Request) -> JSONResponse:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if bytes_state.refuse_all_tokens or scheme != "bearer" or presented not in bytes_state.valid_tokens:
        return JSONResponse({"detail": "Could not validate credentials"}, 401)
    if request.query_params.get("input_ooi") != "Hostname|internet|a.nl":
        return JSONResponse([])
    metas = [boefje_meta(META_ID_NEW, "2025-05-02T08:00:00Z"), boefje_meta(META_ID_OLD, "2025-05-01T08:00:00Z")]
    return JSONResponse(metas[: int(request.query_params["limit"])])


bytes_fake = Fake([
    Route("/health", healthy),
    Route("/token", token, methods=["POST"]),
    Route("/bytes/boefje_meta", list_boefje_meta),
])


# --- servers -----------------------------------------------------------------------------


async def start(app: Fake) -> tuple[uvicorn.Server, asyncio.Task, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
async def urls():
    started = {name: await start(app) for name, app in
               {"katalogus": katalogus, "octopoes": octopoes, "bytes": bytes_fake}.items()}
    yield {name: url for name, (_, _, url) in started.items()}
    for server, task, _ in started.values():
        server.should_exit = True
        await asyncio.wait_for(task, 5)


@pytest.fixture(autouse=True)
def fresh_fakes():
    for fake in (katalogus, octopoes, bytes_fake):
        fake.reset()
    octopoes_unhealthy_orgs.clear()
    bytes_state.reset()


def client_fixture(factory: Callable[[dict], object]):
    @pytest.fixture
    async def fixture(urls):
        client = factory(urls)
        yield client
        await client.aclose()

    return fixture


katalogus_client = client_fixture(lambda urls: KatalogusClient(urls["katalogus"], **FAST_RETRY))
octopoes_client = client_fixture(lambda urls: OctopoesClient(urls["octopoes"], **FAST_RETRY))
bytes_client = client_fixture(
    lambda urls: BytesClient(urls["bytes"], username=BYTES_USER, password=BYTES_PASSWORD, **FAST_RETRY)
)


# --- Katalogus ---------------------------------------------------------------------------


async def test_organisations_by_id(katalogus_client):
    organisations = await katalogus_client.get_organisations()
    assert list(organisations) == ["org1", "org2"]
    assert organisations["org2"].name == "Organisation 2" and organisations["org2"].deduplicate is False


async def test_plugins_by_type_and_consumes(katalogus_client):
    plugins = await katalogus_client.get_plugins("org1", "boefje", consumes="Hostname")
    assert [p.id for p in plugins] == ["dns-records"]
    assert katalogus.calls[-1].query == {"plugin_type": ["boefje"], "consumes": ["Hostname"]}
    dns = plugins[0]
    assert (dns.enabled, dns.scan_level, dns.interval, dns.run_on) == (True, 1, 60, None)
    assert dns.produces == ["boefje/dns-records"]


async def test_plugin_fields_and_consumes_always_a_list(katalogus_client):
    plugins = {p.id: p for p in await katalogus_client.get_plugins("org1")}
    assert katalogus.calls[-1].query == {}
    assert plugins["check-hostname"].consumes == ["Hostname"]
    nmap = plugins["nmap"]
    assert (nmap.cron, nmap.run_on, nmap.enabled) == ("0 * * * *", ["create", "update"], False)
    assert nmap.oci_image == "ghcr.io/minvws/nmap:latest"
    assert (nmap.rate_limit_group, nmap.rate_limit_interval) == (None, None)
    assert (plugins["dns-records"].rate_limit_group, plugins["dns-records"].rate_limit_interval) == ("dns:{object_type}", 0.5)


async def test_plugins_of_unknown_organisation_are_empty(katalogus_client):
    assert await katalogus_client.get_plugins("nope", "boefje") == []


async def test_plugin_by_id(katalogus_client):
    plugin = await katalogus_client.get_plugin("org1", "kat_dns_normalize")
    assert plugin.type == "normalizer" and plugin.consumes == ["boefje/dns-records"]
    assert await katalogus_client.get_plugin("org1", "missing") is None
    assert katalogus.paths()[-1] == "/v1/organisations/org1/plugins/missing"


async def test_configs_with_duplicates_sends_mulas_parameters(katalogus_client):
    configs = await katalogus_client.get_configs("org1", "dns-records", enabled=True, with_duplicates=True)
    assert katalogus.calls[-1].query == {
        "organisation_id": ["org1"], "boefje_id": ["dns-records"], "enabled": ["true"],
        "with_duplicates": ["true"], "offset": ["0"],
    }
    assert [d.organisation_id for d in configs[0].duplicates] == ["org2", "org3"]
    assert configs[0].settings == {"RESOLVER": "9.9.9.9"}


async def test_plugin_list_is_cached_per_key(katalogus_client):
    for _ in range(3):
        await katalogus_client.get_plugins("org1", "boefje", consumes="Hostname")
    await katalogus_client.get_plugins("org1", "boefje", consumes="IPAddressV4")
    await katalogus_client.get_organisations()
    await katalogus_client.get_organisations()
    assert len(katalogus.calls) == 3
    await katalogus_client.get_plugins("org1", "boefje", consumes="Hostname", fresh=True)
    assert len(katalogus.calls) == 4


async def test_cached_plugins_expire_after_ttl(urls):
    async with KatalogusClient(urls["katalogus"], cache_ttl=0.1, **FAST_RETRY) as client:
        await client.get_plugins("org1")
        await client.get_plugins("org1")
        await asyncio.sleep(0.15)
        await client.get_plugins("org1")
    assert len(katalogus.calls) == 2


async def test_concurrent_misses_share_one_request(katalogus_client):
    katalogus.delay = 0.05
    results = await asyncio.gather(*(katalogus_client.get_plugins("org1", "normalizer") for _ in range(10)))
    assert len(katalogus.calls) == 1
    assert all([p.id for p in plugins] == ["kat_dns_normalize"] for plugins in results)


async def test_unavailable_answers_are_retried(katalogus_client):
    katalogus.fail_with = [503, 502]
    assert "org1" in await katalogus_client.get_organisations()
    assert len(katalogus.calls) == 3


async def test_error_answers_raise_without_retry_or_caching(katalogus_client):
    katalogus.fail_with = [500]
    with pytest.raises(ServiceResponseError) as failure:
        await katalogus_client.get_plugins("org1")
    assert failure.value.status_code == 500 and len(katalogus.calls) == 1
    assert len(await katalogus_client.get_plugins("org1")) == len(PLUGINS)


async def test_katalogus_health(katalogus_client):
    assert await katalogus_client.healthy() is True
    assert katalogus.paths() == ["/health"]


# --- Octopoes ----------------------------------------------------------------------------


async def test_objects_are_paged_by_1000(octopoes_client):
    objects = [o async for o in octopoes_client.iter_objects("org1", ["Hostname", "URL"], [2, 3, 4])]
    assert len({o.primary_key for o in objects}) == OBJECT_COUNT
    assert objects[0].scan_profile.level == 2 and objects[0].scan_level == 2
    assert [c.query["offset"] for c in octopoes.calls] == [["0"], ["1000"], ["2000"]]
    first = octopoes.calls[0].query
    assert (first["limit"], first["types"], first["scan_level"]) == (["1000"], ["Hostname", "URL"], ["2", "3", "4"])
    assert len({c.query["valid_time"][0] for c in octopoes.calls}) == 1
    assert octopoes.paths() == ["/org1/objects"] * 3


async def test_objects_of_unknown_organisation(octopoes_client):
    assert [o async for o in octopoes_client.iter_objects("nope", ["Hostname"], [1])] == []


async def test_get_object(octopoes_client):
    found = await octopoes_client.get_object("org1", ooi(7)["primary_key"])
    assert found.object_type == "Hostname" and found.scan_profile.level == 2
    assert "valid_time" in octopoes.calls[-1].query
    assert await octopoes_client.get_object("org1", "Hostname|internet|gone.example") is None


async def test_malformed_object_is_an_invalid_response(octopoes_client):
    with pytest.raises(InvalidResponse, match="octopoes: GET /org1/object"):
        await octopoes_client.get_object("org1", "broken")


async def test_object_clients(octopoes_client):
    holders = await octopoes_client.get_object_clients(ooi(7)["primary_key"], {"org2", "org1", "org3"})
    assert {org: o.scan_level for org, o in holders.items()} == {"org1": 2, "org2": 4}
    assert octopoes.calls[-1].query["clients"] == ["org1", "org2", "org3"]
    assert await octopoes_client.get_object_clients("x", []) == {}
    assert len(octopoes.calls) == 1


async def test_octopoes_health_is_per_organisation(urls):
    async def organisation_ids():
        return ["org1", "org2"]

    async with OctopoesClient(urls["octopoes"], organisation_ids=organisation_ids, **FAST_RETRY) as client:
        assert await client.healthy() is True
        assert sorted(octopoes.paths()) == ["/org1/health", "/org2/health"]
        octopoes_unhealthy_orgs.add("org2")
        assert await client.healthy() is False


async def test_octopoes_health_without_organisations_probes_root(urls):
    async def katalogus_down():
        raise ServiceUnavailable("katalogus", "down")

    async with OctopoesClient(urls["octopoes"], organisation_ids=katalogus_down, **FAST_RETRY) as client:
        assert await client.healthy() is True
    async with OctopoesClient(urls["octopoes"]) as client:
        assert await client.healthy() is True
    assert octopoes.paths() == ["/health", "/health"]


# --- Bytes -------------------------------------------------------------------------------


async def test_last_run_logs_in_and_returns_newest(bytes_client):
    meta = await bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1")
    assert str(meta.id) == META_ID_NEW and meta.ended_at.isoformat() == "2025-05-02T08:00:00+00:00"
    login, lookup = bytes_fake.calls
    assert (login.method, login.path) == ("POST", "/token")
    assert lookup.headers["authorization"] == "bearer token-1"
    assert lookup.query == {
        "boefje_id": ["dns-records"], "input_ooi": ["Hostname|internet|a.nl"], "organization": ["org1"],
        "limit": ["1"], "descending": ["true"],
    }


async def test_never_ran_is_none(bytes_client):
    assert await bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|b.nl", "org1") is None


async def test_expired_token_logs_in_again_once(bytes_client):
    await bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1")
    bytes_state.valid_tokens.clear()
    meta = await bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1")
    assert str(meta.id) == META_ID_NEW
    assert bytes_state.logins == 2
    assert bytes_fake.calls[-1].headers["authorization"] == "bearer token-2"


async def test_concurrent_401s_share_one_login(bytes_client):
    await bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1")
    bytes_state.valid_tokens.clear()
    lookups = [bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1") for _ in range(5)]
    await asyncio.gather(*lookups)
    assert bytes_state.logins == 2


async def test_a_second_401_is_an_authentication_error(bytes_client):
    bytes_state.refuse_all_tokens = True
    with pytest.raises(AuthenticationError) as failure:
        await bytes_client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1")
    assert failure.value.status_code == 401
    assert bytes_state.logins == 2
    assert [c.path for c in bytes_fake.calls] == ["/token", "/bytes/boefje_meta", "/token", "/bytes/boefje_meta"]


async def test_wrong_credentials_are_an_authentication_error(urls):
    async with BytesClient(urls["bytes"], username=BYTES_USER, password="wrong", **FAST_RETRY) as client:
        with pytest.raises(AuthenticationError, match="login refused"):
            await client.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1")
    assert bytes_fake.paths() == ["/token"]


async def test_bytes_health_needs_no_login(bytes_client):
    assert await bytes_client.healthy() is True
    assert bytes_fake.paths() == ["/health"]


# --- failures, health, configuration -------------------------------------------------------


async def test_slow_service_times_out_with_a_typed_error(urls):
    katalogus.delay = 5.0
    started = time.monotonic()
    async with KatalogusClient(urls["katalogus"], timeout=0.2, max_attempts=2, backoff=0.01) as client:
        with pytest.raises(ServiceUnavailable, match="ReadTimeout.* after 2 attempt"):
            await client.get_organisations()
        assert await client.healthy() is False
    assert time.monotonic() - started < 2.5
    assert len(katalogus.calls) == 3  # two attempts for the call, one for the probe


async def test_connection_refused_is_retried_then_unavailable(caplog):
    caplog.set_level(logging.WARNING, logger="redisched.clients.http.base")
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    async with OctopoesClient(url, timeout=1.0, max_attempts=3, backoff=0.02) as client:
        with pytest.raises(ServiceUnavailable, match="ConnectError.* after 3 attempt") as failure:
            await client.get_object("org1", "Hostname|internet|a.nl")
        assert failure.value.service == "octopoes"
        assert await client.healthy() is False
    retries = [r for r in caplog.records if ", attempt " in r.getMessage()]
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in retries] == ["1/3", "2/3"]
    assert time.monotonic() - started < 2.0


async def test_unconfigured_services_raise_and_are_unhealthy():
    clients = ServiceClients.from_settings(Settings())
    assert clients.unconfigured() == ["katalogus", "octopoes", "bytes"]
    calls: list[Callable[[], Awaitable]] = [
        clients.katalogus.get_organisations,
        lambda: clients.octopoes.get_object("org1", "x"),
        lambda: clients.bytes.get_last_run_boefje("b", "x", "org1"),
    ]
    for call in calls:
        with pytest.raises(ServiceNotConfigured):
            await call()
    assert await clients.health() == {"katalogus": False, "octopoes": False, "bytes": False}
    await clients.aclose()


async def test_clients_from_settings(urls):
    settings = Settings(
        katalogus_api=urls["katalogus"] + "/", octopoes_api=urls["octopoes"], bytes_api=urls["bytes"],
        bytes_username=BYTES_USER, bytes_password=BYTES_PASSWORD, katalogus_request_timeout=3,
    )
    clients = ServiceClients.from_settings(settings, backoff=0.01)
    try:
        assert clients.unconfigured() == []
        assert clients.katalogus._http.timeout.read == 3
        assert await clients.health() == {"katalogus": True, "octopoes": True, "bytes": True}
        assert sorted(octopoes.paths()) == ["/org1/health", "/org2/health"]
        assert await clients.bytes.get_last_run_boefje("dns-records", "Hostname|internet|a.nl", "org1") is not None
    finally:
        await clients.aclose()
