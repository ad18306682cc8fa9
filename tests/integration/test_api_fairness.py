"""The fair pop over HTTP: weights from REDISCHED_ORGANISATION_WEIGHTS and the admin routes
(in /openapi.json, admin token to change), per-organisation depth and share served in a
route, in /metrics and in the dashboard's organisations."""

from __future__ import annotations

from tests.acceptance.harness import api_client, boefje_push, db_dsn, settings, template_db  # noqa: F401

ADMIN, VIEWER = {"Authorization": "Bearer adm"}, {"Authorization": "Bearer view"}


def fair(settings):
    return settings.model_copy(
        update={"fairness": "organisation", "organisation_weights": {"a": 3.0}, "admin_tokens": ["adm"],
                "viewer_tokens": ["view"], "runner_tokens": ["run"]}
    )  # fmt: skip


async def test_weights_shares_and_metrics_over_http(settings):
    async with api_client(fair(settings)) as api:
        assert (await api.get("/organisations/weights", headers=VIEWER)).json() == [{"organisation": "a", "weight": 3.0}]
        assert (await api.put("/organisations/b/weight", json={"weight": 2}, headers=VIEWER)).status_code == 403
        assert (await api.put("/organisations/b/weight", json={"weight": 0}, headers=ADMIN)).status_code == 422
        assert (await api.put("/organisations/b/weight", json={"weight": 1, "x": 1}, headers=ADMIN)).status_code == 422
        changed = await api.put("/organisations/b/weight", json={"weight": 2}, headers=ADMIN)
        assert changed.status_code == 200 and changed.json() == {"organisation": "b", "weight": 2.0}
        assert (await api.get("/organisations/c/weight", headers=VIEWER)).json() == {"organisation": "c", "weight": 1.0}
        for org in ("a", "b", "c"):
            for i in range(12):
                response = await api.post("/schedulers/boefje/push", json=boefje_push(f"Hostname|internet|{org}{i}.example", org=org), headers=ADMIN)
                assert response.status_code == 201
        popped = []
        for _ in range(12):
            response = await api.post("/schedulers/boefje/pop", headers={"Authorization": "Bearer run"})
            popped += [task["organisation"] for task in response.json()["results"]]
        assert sorted(popped) == sorted(["a"] * 6 + ["b"] * 4 + ["c"] * 2)  # 3 : 2 : 1
        shares = {s["organisation"]: s for s in (await api.get("/schedulers/boefje/organisations", headers=VIEWER)).json()}
        assert {org: (s["depth"], s["served"], s["weight"]) for org, s in shares.items()} == {
            "a": (6, 6, 3.0), "b": (8, 4, 2.0), "c": (10, 2, 1.0)}  # fmt: skip
        assert shares["a"]["share_served"] == 0.5
        metrics = (await api.get("/metrics", headers=VIEWER)).text
        assert 'redisched_organisation_queued{organisation="b",scheduler_id="boefje"} 8.0' in metrics
        assert 'redisched_organisation_served_total{organisation="a",scheduler_id="boefje"} 6.0' in metrics
        assert 'redisched_organisation_weight{organisation="b"} 2.0' in metrics
        overview = (await api.get("/dashboard/overview", headers=VIEWER)).json()
        assert {o["organisation"]: o["weight"] for o in overview["organisations"]} == {"a": 3.0, "b": 2.0, "c": 1.0}
        assert (await api.delete("/organisations/b/weight", headers=ADMIN)).status_code == 204
        assert (await api.get("/organisations/weights", headers=VIEWER)).json() == [{"organisation": "a", "weight": 3.0}]
        paths = (await api.get("/openapi.json", headers=VIEWER)).json()["paths"]
        assert {"get", "put", "delete"} <= set(paths["/organisations/{organisation}/weight"])
        assert "/schedulers/{scheduler_id}/organisations" in paths and "/organisations/weights" in paths


async def test_without_fairness_the_dashboard_has_no_weights(settings):
    async with api_client(settings) as api:
        await api.post("/schedulers/boefje/push", json=boefje_push("Hostname|internet|x.example"))
        overview = (await api.get("/dashboard/overview")).json()
        assert [o["weight"] for o in overview["organisations"]] == [None]
        assert "redisched_organisation_queued" not in (await api.get("/metrics")).text
