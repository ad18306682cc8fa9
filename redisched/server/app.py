"""The HTTP API: one table of routes (path, method, who may call it, what goes in and out),
from which the Starlette router, the auth guards and ``/openapi.json`` are all built.

The pop path in three files: ``routes/schedulers.py:pop`` → ``queue/queue.py:TaskQueues.pop``
→ ``lua/pop.lua``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redisched import telemetry
from redisched.config import Settings
from redisched.models import Schedule, ScheduleCreate, SchedulePatch, Scheduler, ServiceHealth, Task, TaskPatch, TaskPush
from redisched.server import docs, openapi
from redisched.server.auth import Endpoint, Role, Tokens, warn_if_open
from redisched.server.dashboard import routes as dashboard
from redisched.history.tasks import StatusChange
from redisched.server.dashboard.overview import Overview
from redisched.server.errors import HANDLERS
from redisched.history.quarantine import Quarantined
from redisched.server.request_checks import Origins, checked
from redisched.server.responses import JSON, LeaseExtended, LimitRule, LimitRules, OrganisationWeight, Paginated
from redisched.server.responses import PatchedAndPopped, PopResult, QuarantineRetried, QuarantineRetry, WeightChange
from redisched.queue.plans import OrganisationShare
from redisched.server.routes import limits, organisations, quarantine, schedulers, schedules, service, tasks
from redisched.services import Services

PAGE = {"offset": "count", "limit": "count"}
TASK_QUERY = {"scheduler_id": "string", "organisation": "string", "task_type": "string", "status": "status"}
TASK_QUERY |= {"min_created_at": "date-time", "max_created_at": "date-time"} | PAGE
SCHEDULE_QUERY = {"scheduler_id": "string", "organisation": "string", "schedule_hash": "string"}
SCHEDULE_QUERY |= {"enabled": "boolean", "min_deadline_at": "date-time", "max_deadline_at": "date-time"}
SCHEDULE_QUERY |= {"min_created_at": "date-time", "max_created_at": "date-time"} | PAGE


@dataclass(frozen=True)
class Api:
    method: str
    path: str
    endpoint: Endpoint
    role: Role
    summary: str
    returns: Any = None  # the response body's type (None: no schema)
    status: int = 200
    body: Any = None  # the request body's type; openapi.FILTERS for a FilterRequest
    body_required: bool = True
    query: dict[str, str] = field(default_factory=dict)  # name: kind (openapi._QUERY_TYPES)
    errors: tuple[int, ...] = ()  # statuses beyond the ones every route may answer (openapi._ROUTE_ERRORS)
    lease_token: str = ""  # X-Lease-Token: "optional"/"required" in the request, and/or "returned"


API = [
    Api("GET", "/", service.root, "viewer", "Nothing (mula answers null)", openapi.NULL),
    Api("GET", "/health", service.health, "public", "Health", ServiceHealth, query={"externals": "boolean"}),
    Api("GET", "/metrics", service.metrics, "viewer", "Prometheus metrics", openapi.PROMETHEUS),
    Api("GET", "/schedulers", schedulers.list_schedulers, "viewer", "List schedulers", list[Scheduler]),
    Api("GET", "/schedulers/{scheduler_id}", schedulers.get_scheduler, "viewer", "Get a scheduler", Scheduler),
    Api("POST", "/schedulers/{scheduler_id}/push", schedulers.push, "admin",
        "Push a task (a whole Task body of a dispatched task hands it back: requeued at once)", Task, 201, TaskPush,
        errors=(409, 429)),  # fmt: skip
    Api(
        "POST", "/schedulers/{scheduler_id}/pop", schedulers.pop, "runner",
        "Pop tasks (lease token in the X-Lease-Token header; ?wait= long-polls up to 30 s; "
        "?status=running hands them out running)",
        PopResult, body=openapi.FILTERS, body_required=False,
        query={"limit": "count", "wait": "number", "status": "popped-status"},
        lease_token="returned",
    ),  # fmt: skip
    Api("GET", "/tasks", tasks.list_tasks, "viewer", "List tasks", Paginated[Task], query=TASK_QUERY,
        body=openapi.FILTERS, body_required=False),  # fmt: skip
    Api("POST", "/tasks", tasks.list_tasks, "viewer", "List tasks", Paginated[Task], query=TASK_QUERY,
        body=openapi.FILTERS, body_required=False),  # fmt: skip
    Api("GET", "/tasks/stats", tasks.task_stats, "viewer", "Tasks per hour and status (last 24 h)", dict[str, dict[str, int]],
        query={"scheduler_id": "string", "organisation_id": "string"}),  # fmt: skip
    Api("GET", "/tasks/{task_id}", tasks.get_task, "any", "Get a task", Task),
    Api("PATCH", "/tasks/{task_id}", tasks.patch_task, "runner", "Patch a task", Task, body=TaskPatch, errors=(409,),
        lease_token="optional"),  # fmt: skip
    Api("PATCH", "/tasks/{task_id}/pop_next", tasks.patch_and_pop, "runner",
        "Finish and fetch: patch the task as PATCH /tasks/{task_id} does, then pop up to limit (default 1) tasks "
        "of its queue with the body's filters (?status=running: handed out running); a refused patch pops nothing",
        PatchedAndPopped, body=openapi.PATCH_AND_FILTERS, query={"limit": "count", "status": "popped-status"},
        errors=(409,),
        lease_token="optional returned"),  # fmt: skip
    Api("POST", "/tasks/{task_id}/lease", tasks.extend_lease, "runner", "Extend a task's lease (X-Lease-Token)",
        LeaseExtended, query={"seconds": "lease-seconds"}, errors=(409,), lease_token="required"),  # fmt: skip
    Api("GET", "/schedules", schedules.list_schedules, "viewer", "List schedules", Paginated[Schedule], query=SCHEDULE_QUERY),
    Api("POST", "/schedules", schedules.create_schedule, "admin", "Create a schedule", Schedule, 201, ScheduleCreate,
        errors=(409,)),  # fmt: skip
    Api("POST", "/schedules/search", schedules.search_schedules, "viewer", "Search schedules", Paginated[Schedule],
        body=openapi.FILTERS, query=PAGE),  # fmt: skip
    Api("GET", "/schedules/{schedule_id}", schedules.get_schedule, "viewer", "Get a schedule", Schedule),
    Api("PATCH", "/schedules/{schedule_id}", schedules.patch_schedule, "admin", "Patch a schedule", Schedule,
        body=SchedulePatch, errors=(409,)),  # fmt: skip
    Api("DELETE", "/schedules/{schedule_id}", schedules.delete_schedule, "admin", "Delete a schedule", status=204),
    Api("GET", "/history/quarantine", quarantine.list_quarantined, "viewer",
        "Events Postgres refused, set aside by the snapshotter (oldest 1,000 per queue partition)", list[Quarantined],
        query={"scheduler_id": "string"}),  # fmt: skip
    Api("POST", "/history/quarantine/retry", quarantine.retry_quarantined, "admin",
        "Put quarantined events back on their queue's event stream (the given ids, or all)", QuarantineRetried,
        body=QuarantineRetry, body_required=False),  # fmt: skip
    Api("GET", "/limits", limits.get_limits, "viewer", "The limit rules per boefje group in force", LimitRules),
    Api("PUT", "/limits", limits.replace_limits, "admin",
        "Replace the limit rules per boefje group (a list of rules, as REDISCHED_LIMITS; every API process follows)",
        LimitRules, body=list[LimitRule]),  # fmt: skip
    Api("GET", "/organisations/weights", organisations.list_weights, "viewer",
        "Organisations' weights in the fair pop (REDISCHED_FAIRNESS); one not listed weighs 1", list[OrganisationWeight]),
    Api("GET", "/organisations/{organisation}/weight", organisations.get_weight, "viewer",
        "An organisation's weight in the fair pop", OrganisationWeight),
    Api("PUT", "/organisations/{organisation}/weight", organisations.set_weight, "admin",
        "Set an organisation's weight in the fair pop (every queue, at once)", OrganisationWeight, body=WeightChange),
    Api("DELETE", "/organisations/{organisation}/weight", organisations.reset_weight, "admin",
        "Put an organisation's weight back to 1", status=204),
    Api("GET", "/schedulers/{scheduler_id}/organisations", organisations.shares, "viewer",
        "Per organisation: queued tasks, tasks served with fairness on and their share, weight", list[OrganisationShare]),
    Api("GET", "/dashboard/overview", dashboard.figures, "viewer", "The dashboard's figures (one Redis round trip)",
        Overview),  # fmt: skip
    Api("GET", "/dashboard/tasks/{task_id}/history", dashboard.task_history, "viewer",
        "A task's changes (push, pop, patch, reap), oldest first, as the history holds them", list[StatusChange]),  # fmt: skip
]

HOT_PATHS = ("/schedulers/{scheduler_id}/pop", "/schedulers/{scheduler_id}/push", "/tasks/{task_id}/pop_next")


def create_app(services: Services, *, lifespan: Callable[[Starlette], Any] | None = None) -> Starlette:
    """The API on open ``services``."""
    app = api_app(services.settings, lifespan=lifespan)
    app.state.services = services
    return app


def api_app(settings: Settings, *, lifespan: Callable[[Starlette], Any] | None = None) -> Starlette:
    """The API whose ``lifespan`` puts its services in ``app.state.services``."""
    tokens = Tokens(settings.admin_tokens, settings.runner_tokens, settings.viewer_tokens)
    warn_if_open(tokens)
    document = openapi.document(API)
    # The router tries routes in order: pop and push, nearly all the traffic, go first. Neither
    # path can match another route's, so the order changes no answer.
    hot = sorted(API, key=lambda api: api.path not in HOT_PATHS)
    endpoints = [(api.path, api.method, api.endpoint, api.role) for api in hot]
    endpoints += [("/openapi.json", "GET", _serve(JSON(document)), "viewer")]
    origins = Origins(settings.allowed_origins)
    routes = [
        Route(path, checked(tokens.guard(endpoint, role), origins), methods=[method])
        for path, method, endpoint, role in endpoints
    ]
    routes += docs.routes(lambda endpoint: checked(tokens.guard(endpoint, "viewer"), origins))
    routes += dashboard.page_routes(tokens.enabled)
    tracer = telemetry.tracer(settings)
    middleware = [Middleware(telemetry.RequestSpans, tracer=tracer)] if tracer is not None else []
    app = Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan, middleware=middleware)
    app.state.max_body_bytes = settings.max_body_bytes
    return app


def _serve(response: Response) -> Endpoint:
    async def constant(_request: Request) -> Response:
        return response

    return constant
