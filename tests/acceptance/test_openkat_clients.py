"""The calls OpenKAT's own clients make, as they make them, over a real socket to
``redisched serve``: the boefje runner (``boefjes/.../scheduler_client.py``) and the web UI
(``rocky/rocky/scheduler.py``)."""

from __future__ import annotations

import datetime
import uuid

import httpx
import pydantic

from tests.acceptance.harness import api_process, boefje_push, db_dsn, settings, template_db  # noqa: F401

IMAGE = "ghcr.io/minvws/openkat/dns-records:latest"


def test_the_boefje_runner_pops_runs_and_completes_a_task(api_process):
    with httpx.Client(base_url=api_process, timeout=10) as runner:
        pushed = runner.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|run.example", boefje={"oci_image": IMAGE}))
        assert pushed.status_code == 201
        filters = {"filters": [
            {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": [IMAGE]},
            {"column": "data", "field": "boefje__id", "operator": "in", "value": ["dns-records"]},
        ]}  # fmt: skip
        response = runner.post("/schedulers/boefje/pop", params={"limit": 1}, json=filters)
        assert response.status_code == 200
        [task] = response.json()["results"]
        assert task["id"] == pushed.json()["id"] and task["status"] == "dispatched"
        assert runner.patch(f"/tasks/{task['id']}", json={"status": "running"}).json()["status"] == "running"
        assert runner.get(f"/tasks/{task['id']}").json()["status"] == "running"  # the input API checks this
        assert runner.patch(f"/tasks/{task['id']}", json={"status": "completed"}).status_code == 200
        assert runner.get(f"/tasks/{task['id']}").json()["status"] == "completed"
        assert runner.post("/schedulers/boefje/pop", params={"limit": 1}, json=filters).json() == {"results": []}


def test_the_web_ui_counts_pages_and_manages_schedules(api_process):
    with httpx.Client(base_url=api_process, timeout=10) as ui:
        for name in ("a", "b", "c"):
            ui.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{name}.example"))
        org = {"filters": {"and": [{"column": "organisation", "operator": "eq", "value": "org1"}]}}
        count = ui.post("/tasks", params={"limit": 0, "input_ooi": "ignored"}, json=org).json()
        assert count["count"] == 3 and count["results"] == []
        page = ui.post("/tasks", params={"limit": 2, "offset": 0}, json=org).json()
        assert len(page["results"]) == 2 and page["next"].startswith(api_process + "/tasks?")
        found = ui.post("/schedules/search", params={"limit": 10}, json=org).json()
        assert found["count"] == 3
        schedule = found["results"][0]
        patched = ui.patch(f"/schedules/{schedule['id']}", json={"enabled": False})
        assert patched.status_code == 200 and patched.json()["enabled"] is False
        assert ui.delete(f"/schedules/{schedule['id']}").status_code == 204
        assert ui.post("/schedules/search", json=org).json()["count"] == 2


def test_errors_over_the_socket_are_json(api_process):
    with httpx.Client(base_url=api_process, timeout=10) as client:
        assert client.get("/nope").json() == {"detail": "Not Found"}
        assert client.put("/tasks").json() == {"detail": "Method Not Allowed"}
        response = client.get("/tasks/123")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "task_id"]


class RunnerBoefjeMeta(pydantic.BaseModel):
    """The boefje runner's ``BoefjeMeta`` (``boefjes/worker/job_models.py``): what it parses a
    popped boefje task's ``data`` into, and fills in (hydrates) before handing it to a worker."""

    id: uuid.UUID
    started_at: pydantic.AwareDatetime | None = None
    ended_at: pydantic.AwareDatetime | None = None
    boefje: dict
    input_ooi: str | None = None
    arguments: dict = {}
    organization: str
    runnable_hash: str | None = None
    environment: dict[str, str] | None = None


class RunnerTask(pydantic.BaseModel):
    """The runner's ``Task`` (``boefjes/worker/interfaces.py``)."""

    id: uuid.UUID
    scheduler_id: str
    schedule_id: str | None
    organisation: str
    priority: int
    status: str
    type: str
    hash: str | None = None
    data: RunnerBoefjeMeta
    created_at: datetime.datetime
    modified_at: datetime.datetime


def test_a_stopping_runner_hands_its_unstarted_tasks_back_at_once(api_process):
    """``SchedulerWorkerManager.exit`` (SIGTERM): every task in the runner's local queue, popped
    but not started, goes back through ``SchedulerAPIClient.push_item``: POST
    ``/schedulers/{scheduler_id}/push`` with ``content=task.model_dump_json()``."""
    with httpx.Client(base_url=api_process, timeout=10) as runner:
        pushed = [runner.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{n}.example", priority=p)).json()
                  for n, p in (("first", 1), ("second", 2))]  # fmt: skip
        local_queue = []
        for _ in pushed:  # the runner's _fill_queue, then hydration of each BoefjeMeta
            popped = runner.post("/schedulers/boefje/pop", params={"limit": 1}).json()["results"]
            [task] = [RunnerTask.model_validate(t) for t in popped]
            task.data.arguments = {"oci_image": IMAGE, "input": {"object_type": "Hostname"}}
            task.data.runnable_hash, task.data.environment = "abc", {"SECRET": "from katalogus"}
            local_queue.append(task)
        assert [t.status for t in local_queue] == ["dispatched", "dispatched"]

        for task in local_queue:  # exit(): push_item(p_item) for each
            response = runner.post(f"/schedulers/{task.scheduler_id}/push", content=task.model_dump_json())
            assert response.status_code == 201, response.text
            back = response.json()
            assert back["id"] == str(task.id) and back["status"] == "queued"
            assert back["priority"] == task.priority and back["schedule_id"] == task.schedule_id

        for original in pushed:  # as they were pushed: the runner's hydration (its secrets) is not stored
            stored = runner.get(f"/tasks/{original['id']}").json()
            assert stored["status"] == "queued" and stored["data"] == original["data"]
            assert stored["created_at"] == original["created_at"]
        assert runner.get("/schedulers/boefje").json()["qsize"] == 2
        again = [runner.post("/schedulers/boefje/pop", params={"limit": 1}).json()["results"][0]["id"] for _ in pushed]
        assert again == [t["id"] for t in pushed]  # at once, in their old places


def test_any_other_whole_task_body_keeps_mulas_422(api_process):
    with httpx.Client(base_url=api_process, timeout=10) as client:
        for name, priority in (("running", 1), ("dispatched", 2), ("queued", 3)):
            client.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{name}.example", priority=priority))
        [running] = client.post("/schedulers/boefje/pop", params={"limit": 1}).json()["results"]
        running = client.patch(f"/tasks/{running['id']}", json={"status": "running"}).json()
        [dispatched] = client.post("/schedulers/boefje/pop", params={"limit": 1}).json()["results"]
        [queued] = client.get("/tasks", params={"status": "queued"}).json()["results"]
        bodies = {
            "queued": queued,
            "running": running,
            "unknown id": {**dispatched, "id": str(uuid.uuid4())},
            "another hash": {**dispatched, "hash": "0" * 32},
            "another scheduler": {**dispatched, "scheduler_id": "normalizer"},
        }
        for name, body in bodies.items():
            response = client.post("/schedulers/boefje/push", json=body)
            assert response.status_code == 422, name
            extras = [e["loc"][1] for e in response.json()["detail"] if e["type"] == "extra_forbidden"]
            assert extras == ["schedule_id", "status", "type", "hash", "created_at", "modified_at"], name
        assert client.get(f"/tasks/{dispatched['id']}").json()["status"] == "dispatched"
        assert client.get(f"/tasks/{running['id']}").json()["status"] == "running"
