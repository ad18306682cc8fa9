"""OpenTelemetry (the ``otel`` extra): off unless asked; when on, a span per API request, a
child span per queue script call, and the pop of a task linked to its push."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from redisched import telemetry
from redisched.queue.keys import trace_key
from tests.acceptance.harness import api_client, boefje_push, db_dsn, settings, template_db  # noqa: F401


@pytest.fixture(scope="module")
def exported() -> InMemorySpanExporter:
    """The process's tracer provider, recording in memory (set once: OpenTelemetry allows one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_off_unless_asked(settings, monkeypatch):
    for name in [name for name in __import__("os").environ if name.startswith("OTEL_EXPORTER_")]:
        monkeypatch.delenv(name)
    assert telemetry.tracer(settings) is None
    async with api_client(settings) as api:
        assert api.services.queues.driver.send.__qualname__ == "AsyncDriver.send"  # not wrapped
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert telemetry.wanted(settings)


async def test_request_and_script_spans_and_the_pop_links_to_the_push(settings, exported, sync_redis, key_prefix):
    exported.clear()
    async with api_client(settings.model_copy(update={"otel": True})) as api:
        pushed = (await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|t.example"))).json()
        assert sync_redis.exists(trace_key(f"{key_prefix}:{{boefje}}:queue", pushed["id"]))
        [popped] = (await api.post("/schedulers/boefje/pop")).json()["results"]
        assert popped["id"] == pushed["id"]
    spans = {span.name: span for span in exported.get_finished_spans()}
    push_request, push_script = spans["POST /schedulers/{scheduler_id}/push"], spans["redisched push"]
    pop_request, pop_script = spans["POST /schedulers/{scheduler_id}/pop"], spans["redisched pop"]
    assert push_script.parent.span_id == push_request.context.span_id
    assert pop_script.parent.span_id == pop_request.context.span_id
    assert {"redisched.queue": "boefje", "redisched.operation": "push"}.items() <= dict(push_script.attributes).items()
    assert push_request.attributes["http.response.status_code"] == 201
    assert [link.context.span_id for link in pop_script.links] == [push_script.context.span_id]
    assert not sync_redis.exists(trace_key(f"{key_prefix}:{{boefje}}:queue", pushed["id"]))  # the pop took it
