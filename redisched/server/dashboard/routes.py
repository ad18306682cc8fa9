"""The dashboard's routes: the page and its files (no data in them, so open to anyone: the
page asks for a token and sends it with every call), and the figures behind a viewer token."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from redisched.server.auth import role
from redisched.server.inputs import path_uuid
from redisched.server.dashboard.overview import overview
from redisched.server.responses import JSON
from redisched.server.services import services

STATIC = Path(str(resources.files("redisched.server.dashboard") / "static"))
# The page may talk to its own origin only: no CDN, no font or image from elsewhere.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


async def page(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


async def figures(request: Request) -> JSON:
    return JSON(await overview(services(request), role(request)), headers={"cache-control": "no-store"})


async def task_history(request: Request) -> JSON:
    """A task's changes as the history holds them (empty for an unknown id), once Postgres has
    caught up with what Redis acknowledged before the call."""
    task_id = path_uuid(request, "task_id")
    await services(request).history_caught_up()
    return JSON(await services(request).tasks.history(task_id))


def page_routes(auth_required: bool) -> list[Route | Mount]:
    async def auth(_request: Request) -> JSON:
        """Whether the page must ask for a token before it asks for figures."""
        return JSON({"required": auth_required}, headers={"cache-control": "no-store"})

    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/auth", auth, methods=["GET"]),
        Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
