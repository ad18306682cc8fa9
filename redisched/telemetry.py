"""OpenTelemetry traces, optional (``pip install 'redisched[otel]'``) and off unless asked for:
``REDISCHED_OTEL=1`` or any ``OTEL_EXPORTER_*`` variable (the SDK reads those itself: the
OTLP endpoint, headers, protocol).

When on, the API makes a span per request (``POST /schedulers/{scheduler_id}/pop``) and a
child span per queue script call (``redisched push``, with the queue, partition and
operation), and a pop's span links to the span of each popped task's push: the push's span
context waits for its pop in a small key beside the task (keys.py: ``trace_key``), dropped by
the pop or after a day. When off, nothing here is imported beyond this module and no code
path changes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redisched.config import Settings
from redisched.queue.calls import Batch, ScriptCall
from redisched.queue.keys import trace_key

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from redisched.queue.queue import TaskQueues

log = logging.getLogger(__name__)

TRACE_KEY_SECONDS = 86_400  # a push's span context waits this long for its pop
_tracer: Tracer | None = None
_set_up = False


def wanted(settings: Settings) -> bool:
    return settings.otel or any(name.startswith("OTEL_EXPORTER_") for name in os.environ)


def tracer(settings: Settings) -> Tracer | None:
    """This process's tracer when ``settings`` want tracing (set up on first use); None when
    they do not, or when the ``otel`` extra is not installed (said once in the log)."""
    global _tracer, _set_up
    if not wanted(settings):
        return None
    if not _set_up:
        _set_up = True
        _tracer = _set_up_tracer()
    return _tracer


def _set_up_tracer() -> Tracer | None:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("tracing asked for, but OpenTelemetry is not installed: pip install 'redisched[otel]'")
        return None
    if not isinstance(trace.get_tracer_provider(), TracerProvider):  # an embedding program may have set one
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "redisched")})
        provider = TracerProvider(resource=resource)
        if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    log.info("OpenTelemetry tracing on")
    return trace.get_tracer("redisched")


# --- a span per HTTP request -------------------------------------------------------------------


class RequestSpans:
    """ASGI middleware: one server span per HTTP request, named by its route template.
    (opentelemetry-instrumentation-asgi does more, is pre-release only and brings four more
    packages; one span per request is this much.)"""

    def __init__(self, app: Any, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, Status, StatusCode

        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        method = scope["method"]
        with self.tracer.start_as_current_span(
            method, context=extract(headers), kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:  # fmt: skip
            status = {}

            async def sending(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status.get("code", 500) >= 500:
                    span.set_status(Status(StatusCode.ERROR))


# --- a span per queue script call, pushes linked to their pops -----------------------------------


def instrument(queues: TaskQueues, tracer: Tracer) -> None:
    """Every script call ``queues`` sends gets its span. Every plan's batch goes out through
    the driver's ``send`` (driver.py), so this wraps that one method of this one driver: the
    queue code itself has no tracing in it."""
    send = queues.driver.send

    async def traced(calls: Batch) -> list[Any]:
        if not any(isinstance(call, ScriptCall) for call in calls):
            return await send(calls)
        return await _traced_batch(queues, tracer, send, calls)

    queues.driver.send = traced  # type: ignore[method-assign]


async def _traced_batch(queues: TaskQueues, tracer: Tracer, send: Callable[[Batch], Awaitable[list[Any]]], calls: Batch) -> list[Any]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    spans = {}
    for i, call in enumerate(calls):
        if isinstance(call, ScriptCall):
            attributes = {"db.system": "redis", "redisched.operation": call.script.name, **_where(call.keys[0])}
            spans[i] = tracer.start_span(f"redisched {call.script.name}", kind=SpanKind.CLIENT, attributes=attributes)
    try:
        results = await send(calls)
    except BaseException as exc:
        for span in spans.values():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))
            span.end()
        raise
    try:
        for i, span in spans.items():
            call, result = calls[i], results[i]
            if not span.is_recording():  # sampled out: no link kept, no round trip spent
                continue
            if call.script.name == "push" and hasattr(result, "id"):
                await _remember_push(queues, call.keys[0], result.id, span)
            elif call.script.name == "pop" and result:
                await _link_pushes(queues, call.keys[0], [record.id for record in result], span)
                span.set_attribute("redisched.tasks", len(result))
    finally:
        for span in spans.values():
            span.end()
    return results


def _where(first_key: str) -> dict[str, str | int]:
    """The queue and partition of a script call, from its first key (``<p>:{<tag>}:queue``);
    none for a script on a key of no queue (the limit rules)."""
    start, end = first_key.find("{"), first_key.find("}")
    if start < 0 or end < start:
        return {}
    queue, _, rest = first_key[start + 1 : end].partition(".")
    return {"redisched.queue": queue, "redisched.partition": int(rest.split(".")[0]) if rest else 0}


async def _remember_push(queues: TaskQueues, queue_key: str, task_id: str, span: Any) -> None:
    context = span.get_span_context()
    value = f"{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    await queues.redis.set(trace_key(queue_key, task_id), value, ex=TRACE_KEY_SECONDS)


async def _link_pushes(queues: TaskQueues, queue_key: str, task_ids: list[str], span: Any) -> None:
    from opentelemetry.trace import SpanContext, TraceFlags

    keys = [trace_key(queue_key, task_id) for task_id in task_ids]
    async with queues.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        for key in keys:
            pipe.delete(key)
        replies = await pipe.execute()
    for value in replies[: len(keys)]:
        if value:
            trace_id, span_id, flags = (value.decode() if isinstance(value, bytes) else value).split("-")
            pushed = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)))
            span.add_link(pushed, {"redisched.link": "push"})
