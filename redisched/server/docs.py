"""``/docs``: Swagger UI for ``/openapi.json``, its files served from the openapi-ui-bundles
package, so it works with no internet (OpenKAT installs are often air-gapped).

Every URL in the page is relative (``openapi.json``, ``docs/assets/...``): behind a proxy that
serves the API under a path prefix, ``/prefix/docs`` loads ``/prefix/openapi.json``. The page
is guarded like ``/openapi.json``; its assets, the package's files as published, are public.
"""

from __future__ import annotations

from collections.abc import Callable

from openapi_ui_bundles import swagger_ui
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from redisched.server.auth import Endpoint

ASSETS = "/docs/assets"

# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>redisched API</title>
<link rel="stylesheet" href="{ASSETS[1:]}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS[1:]}/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSETS[1:]}/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui", validatorUrl: null}});</script>
</body></html>
"""


def routes(guard: Callable[[Endpoint], Endpoint]) -> list[BaseRoute]:
    """The page (behind ``guard``) and its assets."""
    page = HTMLResponse(PAGE)

    async def docs(_request) -> HTMLResponse:
        return page

    return [
        Route("/docs", guard(docs), methods=["GET"]),
        Mount(ASSETS, app=StaticFiles(directory=swagger_ui.static_path), name="docs-assets"),
    ]
