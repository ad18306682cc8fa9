"""Replays the session recorded against mula v1.20 (``golden/mula-v1.20-session.json``, a copy of
``shared/openkat/golden/``) against a fresh redisched and compares every answer: status,
content type, Retry-After, and the body's keys, value types and every value that is not an id
or a time.

Ids: the n-th id we hand out stands for the n-th id mula handed out; a recorded id seen again
(in a later path, body or answer) must map to the same id of ours. Times must be ISO-8601 UTC
ending in ``Z``. Absolute URLs are compared without their origin.

Gaps: the recording lacks three pushes (seqs 17, 19, 20) whose tasks later answers show; they
are rebuilt from those answers and sent at their place.

Intentional differences (the contract lets us do better):
- a pop answers its tasks with status ``dispatched`` (mula shows the pre-pop ``queued``);
- an unknown filter column is a 400 ``Invalid filter(s): ...`` at once (mula: 500 after ~10 s);
- ``/health`` carries our version string;
- before the first push our queues have no ``last_activity`` yet (null): the recorded mula had
  seen activity before the session began.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from redisched.config import Settings
from tests.acceptance.harness import api, db_dsn, template_db  # noqa: F401

# The recording is the contract: kept in the repo, so a clone replays it; never a skip.
GOLDEN = Path(__file__).resolve().parent / "golden" / "mula-v1.20-session.json"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
BAD_FILTER_COLUMN = {26, 56}
FIRST_PUSH = 3


@pytest.fixture
def settings(redis_url: str, db_dsn: str, key_prefix: str) -> Settings:  # noqa: F811
    """mula 1.20.1 made the recording: its rule lets a push in beside a dispatched twin."""
    return Settings(redis_url=redis_url, db_uri=db_dsn, key_prefix=key_prefix, one_task_per_schedule=False)


def _session() -> list[dict[str, Any]]:
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing: the recorded mula session is part of the repo")
    return json.loads(GOLDEN.read_text())


def _push_again(recorded_task: dict[str, Any], *, keep_id: bool = False) -> dict[str, Any]:
    """The push body that made a task mula later answered with."""
    data = {key: recorded_task["data"][key] for key in ("boefje", "input_ooi", "organization")}
    data["boefje"] = {key: data["boefje"][key] for key in ("id", "name", "version")}
    body = {"organisation": recorded_task["organisation"], "priority": recorded_task["priority"], "data": data}
    if keep_id:
        body["id"] = data["id"] = recorded_task["id"]
    return body


def _gaps(session: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """seq -> pushes to send before it."""
    by_seq = {entry["seq"]: entry for entry in session}
    negative = by_seq[22]["response"]["results"][0]
    same_id = by_seq[28]["response"]["results"][0]
    other_org = by_seq[24]["response"]["results"][0]
    return {18: [_push_again(negative)], 21: [_push_again(same_id, keep_id=True), _push_again(other_org)]}


class Ids:
    """Recorded id -> our id, learned in the order ids appear."""

    def __init__(self) -> None:
        self.ours: dict[str, str] = {}

    def match(self, recorded: str, ours: str, where: str) -> None:
        assert UUID_RE.match(ours), f"{where}: {ours!r} is not a uuid"
        assert self.ours.setdefault(recorded, ours) == ours, f"{where}: {recorded} was {self.ours[recorded]}, now {ours}"

    def substitute(self, value: Any) -> Any:
        text = json.dumps(value)
        for recorded, ours in self.ours.items():
            text = text.replace(recorded, ours)
        return json.loads(text)


def assert_like(recorded: Any, ours: Any, ids: Ids, where: str = "$") -> None:
    if isinstance(recorded, dict):
        assert isinstance(ours, dict), f"{where}: {ours!r} is not an object"
        assert set(ours) == set(recorded), f"{where}: keys {sorted(ours)} != {sorted(recorded)}"
        for key in recorded:
            assert_like(recorded[key], ours[key], ids, f"{where}.{key}")
    elif isinstance(recorded, list):
        assert isinstance(ours, list) and len(ours) == len(recorded), f"{where}: {ours!r} vs {recorded!r}"
        for index, (r, o) in enumerate(zip(recorded, ours)):
            assert_like(r, o, ids, f"{where}[{index}]")
    elif isinstance(recorded, str) and UUID_RE.match(recorded):
        ids.match(recorded, ours, where)
    elif recorded is None:
        assert ours is None, f"{where}: {ours!r} is not null"
    elif isinstance(recorded, str) and TIME_RE.match(recorded):
        assert isinstance(ours, str) and TIME_RE.match(ours), f"{where}: {ours!r} is not a UTC time"
    elif isinstance(recorded, str) and recorded.startswith("http://"):
        assert isinstance(ours, str) and _without_origin(ours) == _without_origin(recorded), f"{where}: {ours!r}"
    else:
        assert type(ours) is type(recorded) and ours == recorded, f"{where}: {ours!r} != {recorded!r}"


def _without_origin(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def _expected(entry: dict[str, Any]) -> dict[str, Any]:
    """The recorded answer with our intentional differences applied."""
    response, path = entry["response"], entry["request"]["path"].split("?")[0]
    if path.endswith("/pop") and entry["status"] == 200:
        return {"results": [{**task, "status": "dispatched"} for task in response["results"]]}
    if path.startswith("/schedulers") and entry["seq"] < FIRST_PUSH and entry["status"] == 200:
        fresh = [{**scheduler, "last_activity": None} for scheduler in _listed(response)]
        return fresh if isinstance(response, list) else fresh[0]
    return response


def _listed(response: Any) -> list[Any]:
    return response if isinstance(response, list) else [response]


async def _send(api, entry: dict[str, Any], ids: Ids):
    request = ids.substitute(entry["request"])
    body = request["body"]
    if body == "":
        return await api.request(request["method"], request["path"], content=b"")
    if body is None:
        return await api.request(request["method"], request["path"])
    return await api.request(request["method"], request["path"], json=body)


async def test_mula_session_replays_with_the_same_answers(api):
    session = _session()
    gaps, ids = _gaps(session), Ids()
    for entry in session:
        for push in gaps.get(entry["seq"], []):
            assert (await api.post("/schedulers/boefje/push", json=push)).status_code == 201
        response = await _send(api, entry, ids)
        label = f"seq {entry['seq']} ({entry['label']})"
        if entry["seq"] in BAD_FILTER_COLUMN:
            assert response.status_code == 400, label
            assert response.json()["detail"].startswith("Invalid filter(s): "), label
            continue
        assert response.status_code == entry["status"], f"{label}: {response.status_code} {response.text}"
        assert response.headers["content-type"] == entry["headers"]["content-type"], label
        if "retry-after" in entry["headers"]:
            assert response.headers.get("retry-after") == entry["headers"]["retry-after"], label
        ours = response.json()
        if entry["request"]["path"] == "/health":
            ours["version"] = entry["response"]["version"]
        assert_like(_expected(entry), ours, ids, label)


def test_the_comparison_catches_differences():
    ids = Ids()
    recorded = {"id": str(uuid.uuid4()), "status": "queued", "at": "2026-01-01T00:00:00.5Z", "n": 1}
    assert_like(recorded, {**recorded, "id": str(uuid.uuid4())}, ids)
    for wrong in ({**recorded, "status": "dispatched"}, {**recorded, "n": True}, {**recorded, "at": "2026-01-01 00:00"},
                  {**recorded, "id": str(uuid.uuid4())}, {k: v for k, v in recorded.items() if k != "n"}):  # fmt: skip
        with pytest.raises(AssertionError):
            assert_like(recorded, wrong, ids)
