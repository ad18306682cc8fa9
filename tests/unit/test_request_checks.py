"""The request checks' rules, on ASGI scopes (the real-socket cases: tests/integration/test_http_csrf.py)."""

from __future__ import annotations

import pytest

from redisched.server.errors import AmbiguousAuthorization, CrossSiteRequest, UnsupportedMediaType
from redisched.server.request_checks import Origins, check, is_json, same_host


def scope(method: str = "POST", host: str = "sched.example:8000", **headers: str) -> dict:
    pairs = [(b"host", host.encode())] + [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"method": method, "headers": pairs}


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", "application/merge-patch+json",
                                          " application/json ", "application/vnd.api+json;q=1"])  # fmt: skip
def test_json_types_pass(content_type):
    assert is_json(content_type.encode())
    check(scope(content_type=content_type), Origins([]))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "text/json", "application/jsonp", "", "text/plain+json"])  # fmt: skip
def test_other_types_are_415_whatever_the_method(content_type):
    for method in ("POST", "GET", "PATCH"):
        with pytest.raises(UnsupportedMediaType):
            check(scope(method, content_type=content_type), Origins([]))


def test_no_content_type_and_no_origin_pass():
    check(scope(), Origins([]))
    check(scope("DELETE"), Origins([]))


@pytest.mark.parametrize(
    "origin, host, same",
    [
        ("http://sched.example:8000", "sched.example:8000", True),
        ("HTTP://Sched.Example:8000", "sched.example:8000", True),
        ("https://kat.example", "kat.example", True),  # TLS proxy: the request arrives as plain HTTP
        ("https://kat.example", "kat.example:443", True),
        ("http://kat.example", "kat.example:80", True),
        ("https://kat.example", "kat.example:8000", False),
        ("http://sched.example:8001", "sched.example:8000", False),
        ("http://evil.example:8000", "sched.example:8000", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("null", "sched.example:8000", False),
        ("file://", "sched.example", False),
        ("http://sched.example:x", "sched.example:8000", False),
        ("http://sched.example:8000", "", False),
    ],
)
def test_same_host(origin, host, same):
    assert same_host(origin.lower(), host) is same


def test_a_state_change_from_another_origin_is_403_a_read_is_not():
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        with pytest.raises(CrossSiteRequest):
            check(scope(method, origin="https://evil.example"), Origins([]))
    check(scope("GET", origin="https://evil.example"), Origins([]))
    check(scope(origin="http://sched.example:8000"), Origins([]))


def test_sec_fetch_site_cross_site_is_403_unless_the_origin_is_allowed():
    with pytest.raises(CrossSiteRequest):
        check(scope(sec_fetch_site="cross-site"), Origins([]))
    with pytest.raises(CrossSiteRequest):  # the browser's word beats a Host that happens to match
        check(scope(origin="http://sched.example:8000", sec_fetch_site="cross-site"), Origins([]))
    check(scope(sec_fetch_site="same-origin"), Origins([]))
    check(scope(origin="https://kat.example", sec_fetch_site="cross-site"), Origins(["https://KAT.example/"]))
    check(scope(origin="https://anything.example", sec_fetch_site="cross-site"), Origins(["*"]))


def test_two_authorization_headers_are_a_400():
    headers = scope("GET")
    headers["headers"] += [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer a")]
    with pytest.raises(AmbiguousAuthorization):
        check(headers, Origins([]))
