"""Bytes: when a boefje last ran on an object. Nothing is cached: the answer decides whether a
boefje is still inside its grace period.

Authentication as in mula: ``POST /token`` with the form fields ``username`` and
``password``, then ``Authorization: bearer <token>``. A 401 means the token expired: log in
again once and retry; a second 401 raises ``AuthenticationError``. Unlike mula we log in
before the first call instead of waiting for its 401, and concurrent 401s share one login.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec

from redisched.clients.http.base import AuthenticationError, ServiceClient
from redisched.models import BoefjeMeta


class Token(msgspec.Struct):
    access_token: str


class BytesClient(ServiceClient):
    name = "bytes"

    def __init__(self, base_url: str | None, *, username: str = "", password: str = "", **options: Any) -> None:
        super().__init__(base_url, **options)
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    async def get_last_run_boefje(self, boefje_id: str, input_ooi: str | None, organization: str) -> BoefjeMeta | None:
        """The newest boefje meta of this boefje on this object in this organisation, if any."""
        params: dict[str, Any] = {
            "boefje_id": boefje_id,
            "organization": organization,
            "limit": 1,
            "descending": "true",
        }
        if input_ooi:
            params["input_ooi"] = input_ooi
        metas = await self._get("/bytes/boefje_meta", list[BoefjeMeta], params)
        return metas[0] if metas else None

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._token or await self._login(stale_token=None)
        response = await self._request(method, path, headers=_bearer(token), **kwargs)
        if response.status_code != httpx.codes.UNAUTHORIZED:
            return response
        token = await self._login(stale_token=token)
        response = await self._request(method, path, headers=_bearer(token), **kwargs)
        if response.status_code == httpx.codes.UNAUTHORIZED:
            raise AuthenticationError(self.name, f"{method} {path} refused a fresh token", response.status_code)
        return response

    async def _login(self, stale_token: str | None) -> str:
        async with self._login_lock:
            if self._token is not None and self._token != stale_token:
                return self._token  # another caller logged in while we waited
            response = await self._request("POST", "/token", data=self._credentials)
            if response.status_code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
                message = "login refused: check BYTES_USERNAME/BYTES_PASSWORD"
                raise AuthenticationError(self.name, message, response.status_code)
            self._token = self._decode(response, Token).access_token
            return self._token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"bearer {token}"}
