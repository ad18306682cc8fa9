"""``/``, ``/health``, ``/metrics``, ``/openapi.json``, unknown routes, body size and backend
outages."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from urllib.parse import urljoin

import httpx

from redisched.queue.layout import QueueLayout
from redisched.app import close_services, open_services
from redisched.server import create_app
from tests.acceptance.harness import api, api_client, boefje_push, db_dsn, settings, template_db  # noqa: F401


async def test_root_is_null(api):
    response = await api.get("/")
    assert response.status_code == 200 and response.content == b"null"
    assert response.headers["content-type"] == "application/json"


async def test_health_is_mulas_shape(api):
    health = (await api.get("/health")).json()
    assert health == {"service": "scheduler", "healthy": True, "version": health["version"], "additional": None,
                      "results": [], "externals": {}}  # fmt: skip


async def test_health_with_externals_probes_services_and_our_backends(api):
    health = (await api.get("/health", params={"externals": "true"})).json()
    assert health["externals"] == {"katalogus": False, "octopoes": False, "bytes": False}  # not configured here
    assert [(r["service"], r["healthy"]) for r in health["results"]] == [("redis", True), ("postgres", True)]
    assert health["healthy"] is True


async def test_metrics_has_the_dashboard_gauges(api):
    await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|m.example"))
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'scheduler_qsize{scheduler_id="boefje"} 1.0' in response.text
    assert 'scheduler_task_status_counts{scheduler_id="boefje",status="queued"}' in response.text
    assert 'redisched_snapshot_lag_seconds{scheduler_id="boefje"}' in response.text


async def test_backlog_is_the_age_of_the_oldest_unapplied_event_and_grows_while_stuck(async_redis, key_prefix):
    import time

    from redisched.history.snapshotter import backlog_seconds
    from redisched.queue.keys import QueueKeys

    keys = QueueKeys(key_prefix, "report")  # no snapshotter follows this prefix: the history is stuck
    now_ms = int(time.time() * 1000)
    await async_redis.xadd(keys.events, {"op": "x"}, id=f"{now_ms - 3000}-0")
    await async_redis.xadd(keys.events, {"op": "x"}, id=f"{now_ms - 1500}-0")
    await async_redis.xadd(keys.events, {"op": "x"}, id=f"{now_ms - 10}-0")
    await async_redis.hset(keys.meta, "applied", f"{now_ms - 3000}-0")  # the first one is in Postgres
    first = (await backlog_seconds(async_redis, QueueLayout(key_prefix), ("report",)))["report"]
    assert 1.5 <= first < 2.5
    await asyncio.sleep(0.2)
    assert (await backlog_seconds(async_redis, QueueLayout(key_prefix), ("report",)))["report"] >= first + 0.2
    await async_redis.hset(keys.meta, "applied", f"{now_ms - 10}-0")
    assert await backlog_seconds(async_redis, QueueLayout(key_prefix), ("report",)) == {"report": 0.0}


async def test_openapi_describes_every_route(api):
    document = (await api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    pop = document["paths"]["/schedulers/{scheduler_id}/pop"]["post"]
    assert pop["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PopResult"}
    assert {"Task", "TaskPush", "TaskPatch", "Schedule", "ScheduleCreate", "FilterRequest"} <= set(document["components"]["schemas"])
    assert len([op for path in document["paths"].values() for op in path]) == 31  # mula's 19, the quarantine's 2, the dashboard's 2, finish and fetch, the limits' 2, the fair pop's 5
    assert {"get", "put"} == set(document["paths"]["/limits"])
    assert {"get", "post"} == {*document["paths"]["/history/quarantine"], *document["paths"]["/history/quarantine/retry"]}


async def test_docs_load_with_no_external_url_and_behind_a_path_prefix(api):
    """Air-gapped installs: every URL of /docs is relative and served by us, so the page also
    works under a proxy's path prefix (/prefix/docs loads /prefix/openapi.json)."""
    page = await api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r'url: "([^"]+)"', page.text)
    assert "openapi.json" in refs and len(refs) >= 3, page.text
    for ref in refs:
        assert not re.match(r"^(\w+:|/)", ref), f"{ref} is not relative"
        assert urljoin("https://proxy.example/prefix/docs", ref).startswith("https://proxy.example/prefix/")
        asset = await api.get(urljoin("/docs", ref))
        assert asset.status_code == 200, ref
        if ref.endswith(".css"):
            assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", asset.text), "the stylesheet loads nothing else"
    assert "SwaggerUIBundle" in (await api.get("/docs/assets/swagger-ui-bundle.js")).text
    assert (await api.get("/docs/assets/nope.js")).status_code == 404
    assert (await api.get("/docs/assets/..%2f..%2fconfig.py")).status_code == 404


async def test_every_error_is_logged_with_its_reason(api, caplog):
    with caplog.at_level(logging.INFO, logger="redisched.http"):
        missing = await api.get(f"/tasks/{uuid.uuid4()}")
        invalid = await api.post("/schedulers/boefje/push", json={"organisation": "org1", "data": {}})
    assert missing.status_code == 404 and invalid.status_code in (400, 422)
    lines = [record.getMessage() for record in caplog.records if record.name == "redisched.http"]
    assert any('"GET /tasks/' in line and " 404 " in line and missing.json()["detail"] in line for line in lines), lines
    assert any('"POST /schedulers/boefje/push" ' + str(invalid.status_code) in line for line in lines), lines


async def test_unknown_route_and_method(api):
    missing = await api.get("/nope")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = await api.delete("/schedulers")
    assert wrong.status_code == 405 and wrong.json() == {"detail": "Method Not Allowed"}


async def test_a_body_over_the_limit_is_413(settings):
    async with api_client(settings.model_copy(update={"max_body_bytes": 1000})) as api:
        body = boefje_push("Hostname|internet|big.example", padding="x" * 2000)
        response = await api.post("/schedulers/boefje/push", json=body)
        assert response.status_code == 413
        assert response.json()["detail"].startswith("Request body too large")
        chunked = await api.post("/schedulers/boefje/push", content=_chunks(b"x" * 2000))
        assert chunked.status_code == 413


async def test_redis_unreachable_is_503_with_retry_after(settings):
    services = await open_services(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            response = await api.post("/schedulers/boefje/pop")
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["detail"].startswith("Service unavailable")
    finally:
        await close_services(services)


async def _chunks(data: bytes):
    for start in range(0, len(data), 500):
        yield data[start : start + 500]
