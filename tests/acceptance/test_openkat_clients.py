"""The calls OpenKAT's own clients make, as they make them, over a real socket to
``redisched serve``: the boefje runner (``boefjes/.../scheduler_client.py``) and the web UI
(``rocky/rocky/scheduler.py``)."""

from __future__ import annotations

import httpx

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
