"""Pop and push skip Starlette's middleware and router (server/app.py ApiApp): every answer,
the failures included, must be the one the full Starlette stack gives."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
import redis.exceptions
from starlette.exceptions import HTTPException

from redisched.config import Settings
from redisched.errors import Conflict
from redisched.filters import FilterError
from redisched.server.app import api_app

FILTER = {"filters": [{"column": "data", "field": "boefje__id", "operator": "eq", "value": "dns"}]}
PUSH = {"organisation": "org1", "data": {"x": 1}, "priority": 1}


class Queues:
    """Stands in for TaskQueues: raises what it is told to, else pops/pushes nothing."""

    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure

    async def pop(self, *_args, **_kwargs):
        if self.failure is not None:
            raise self.failure
        return []

    async def push(self, *_args, **_kwargs):
        raise self.failure or Conflict("already queued")


def _client(failure: BaseException | None, *, hot: bool, tokens: bool = False) -> httpx.AsyncClient:
    settings = Settings(redis_url="redis://127.0.0.1:1", db_uri="postgresql://x@127.0.0.1:1/x",
                        runner_tokens=["runner-token"] if tokens else [], admin_tokens=["admin-token"] if tokens else [])  # fmt: skip
    app = api_app(settings)
    app.state.services = SimpleNamespace(queues=Queues(failure))
    if not hot:
        app._hot = []  # the full Starlette path
    else:
        assert [route.path for route in app._hot_routes()], "pop and push should take the short path"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _answer(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "server")}
    return response.status_code, headers, response.content


FAILURES = [
    None,
    Conflict("taken"),
    redis.exceptions.ConnectionError("down"),
    redis.exceptions.TimeoutError("slow"),
    HTTPException(418, "teapot", headers={"X-A": "b"}),
    FilterError("bad filter"),
    RuntimeError("bug"),
    KeyError("bug"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("/schedulers/boefje/pop", "?limit=1", json.dumps(FILTER)),
        ("/schedulers/boefje/pop", "", ""),
        ("/schedulers/boefje/pop", "?limit=x", ""),
        ("/schedulers/boefje/pop", "?wait=nan", ""),
        ("/schedulers/boefje/pop", "", "{not json"),
        ("/schedulers/nope/pop", "", ""),
        ("/schedulers/boefje/push", "", json.dumps(PUSH)),
        ("/schedulers/boefje/push", "", json.dumps({"data": 1})),
        ("/schedulers/boefje/push", "", "x" * 3_000_000),
    ],
)  # fmt: skip
async def test_short_path_answers_as_starlette(failure, path, query, body):
    answers = []
    for hot in (True, False):
        async with _client(failure, hot=hot) as client:
            response = await client.post(path + query, content=body, headers={"content-type": "application/json"})
        answers.append(_answer(response))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("token", [None, "runner-token", "admin-token", "wrong"])
@pytest.mark.parametrize("path", ["/schedulers/boefje/pop", "/schedulers/boefje/push"])
async def test_short_path_checks_tokens_as_starlette(token, path):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answers = []
    for hot in (True, False):
        async with _client(None, hot=hot, tokens=True) as client:
            answers.append(_answer(await client.post(path, content=json.dumps(PUSH), headers=headers)))
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/schedulers/boefje/pop"), ("PUT", "/schedulers/boefje/push"), ("POST", "/schedulers/boefje/pop/"),
     ("POST", "/schedulers//pop"), ("POST", "/schedulers/a/b/pop"), ("POST", "/schedulers/boefje/popx")],
)  # fmt: skip
async def test_near_misses_answer_as_starlette(method, path):
    answers = []
    for hot in (True, False):
        async with _client(None, hot=hot) as client:
            answers.append(_answer(await client.request(method, path)))
    assert answers[0] == answers[1]
