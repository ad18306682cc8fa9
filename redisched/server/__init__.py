"""The HTTP API: mula's routes, drop-in, on Starlette. ``app.py`` holds the route table;
``routes/`` one module per resource; ``inputs``/``responses`` what routes read and answer;
``errors`` every failure's HTTP answer; ``auth``, ``longpoll``, ``openapi`` the extras."""

from redisched.server.app import create_app

__all__ = ["create_app"]
