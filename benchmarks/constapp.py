"""The ceiling: the same Starlette + uvicorn stack answering a constant JSON body.

Its pop route reads the request body like the real one and answers a pop-sized body
(one task, as redisched's pop returns it), so the HTTP benchmark can say what fraction of the
framework's own ceiling the real pop reaches.

    uvicorn benchmarks.constapp:app --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = (
    b'{"results":[{"id":"5a3b8f0e-8a64-4b6a-9f55-0c1b2d3e4f50","scheduler_id":"boefje",'
    b'"schedule_id":"7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d","organisation":"org1","priority":42,'
    b'"status":"dispatched","type":"boefje","hash":"74956880324db1838156e1ebf7847448",'
    b'"data":{"id":"5a3b8f0e-8a64-4b6a-9f55-0c1b2d3e4f50","boefje":{"id":"boefje-00",'
    b'"name":"boefje-00","version":null,"oci_image":"ghcr.io/minvws/openkat/plugin-0:latest"},'
    b'"input_ooi":"Hostname|internet|h1.example.com","organization":"org1",'
    b'"deduplication_key":null,"dispatches":[]},"created_at":"2025-06-01T10:00:00.123456Z",'
    b'"modified_at":"2025-06-01T10:00:01.654321Z"}]}'
)


async def pop(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json")


async def health(_request: Request) -> Response:
    return Response(b'{"healthy":true}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/schedulers/{scheduler_id}/pop", pop, methods=["POST"]),
        Route("/schedulers/{scheduler_id}/push", pop, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
)
