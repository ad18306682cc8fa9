"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (no browser
download: ``executable_path``), against ``redisched serve`` on 127.0.0.1 with tokens on.

With ``REDISCHED_SCREENSHOTS=<folder>`` the tests also run a minute of steady load first (so
the charts have a shape) and save the README's screenshots there.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.acceptance.harness import boefje_push, db_dsn, serving, settings, template_db  # noqa: F401

CHROMIUM = os.environ.get("REDISCHED_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("REDISCHED_SCREENSHOTS")
ADMIN, RUNNER, VIEWER = ({"authorization": f"Bearer {name}-secret"} for name in ("admin", "runner", "viewer"))
TOKENS = {
    "REDISCHED_ADMIN_TOKENS": '["admin-secret"]',
    "REDISCHED_RUNNER_TOKENS": '["runner-secret"]',
    "REDISCHED_VIEWER_TOKENS": '["viewer-secret"]',
    "REDISCHED_DASHBOARD_REFRESH_SECONDS": "0.5",
    "REDISCHED_HEARTBEAT_SECONDS": "1",
}
SETTLE = 10_000  # ms a figure may take to show (the page polls every 0.5 s here)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def server(settings) -> Iterator[str]:
    with serving(settings, "serve", **TOKENS) as base_url:
        yield base_url


class Watched:
    """A page with everything it asks for and everything it logs recorded."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.navigations = 0
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page: Page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("framenavigated", self._navigated)
        self.base_url = base_url

    def _navigated(self, frame) -> None:
        if frame == self.page.main_frame:
            self.navigations += 1

    def sign_in(self, token: str) -> None:
        self.page.goto(f"{self.base_url}/dashboard")
        self.page.fill("#token", token)
        self.page.click("#login button[type=submit]")
        expect(self.page.locator('.queue[data-scheduler="boefje"]')).to_be_visible(timeout=SETTLE)

    def figure(self, scheduler: str, name: str):
        return self.page.locator(f'.queue[data-scheduler="{scheduler}"] [data-figure="{name}"]')

    def depth(self, scheduler: str):
        return self.page.locator(f'.queue[data-scheduler="{scheduler}"] .depth .value')

    def outside_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith("data:") and urlsplit(url).hostname != "127.0.0.1"]

    def screenshot(self, name: str, part=None) -> None:
        """The whole page (or ``part``, a locator) into the screenshots folder, when asked."""
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.wait_for_timeout(800)  # one more refresh, so the chart is the latest
            path = str(Path(SCREENSHOTS) / name)
            part.screenshot(path=path) if part is not None else self.page.screenshot(path=path, full_page=True)

    def close(self) -> None:
        self.context.close()


def _push(http: httpx.Client, n: int, *, orgs=("org-a",), boefjes=("dns-records",), tag: str = "") -> list[dict]:
    tasks = []
    for i in range(n):
        org, boefje = orgs[i % len(orgs)], boefjes[i % len(boefjes)]
        body = boefje_push(f"Hostname|internet|{tag}{i}.example", org=org, boefje_id=boefje, priority=10 + i % 90)
        response = http.post("/schedulers/boefje/push", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        tasks.append(response.json())
    return tasks


def _pop(http: httpx.Client) -> dict:
    [task] = http.post("/schedulers/boefje/pop", headers=RUNNER).json()["results"]
    return task


def test_the_page_shows_the_queues_live_without_reloading(browser, server):
    with httpx.Client(base_url=server) as http:
        if SCREENSHOTS:
            _steady_load(http, seconds=60)
        before = _depth(http)
        _push(http, 5, orgs=("org-a", "org-b"), tag="live")
        watched = Watched(browser, server)
        try:
            watched.sign_in("admin-secret")
            expect(watched.depth("boefje")).to_have_text(f"{before + 5:,}", timeout=SETTLE)
            expect(watched.page.locator('#orgs tr[data-organisation="org-b"]')).to_be_visible()
            expect(watched.page.locator("#processes li")).to_have_count(1, timeout=SETTLE)
            expect(watched.page.locator("#limits-section")).to_be_hidden()  # no limit rules configured
            watched.screenshot("overview.png")
            if SCREENSHOTS:
                watched.page.locator("#results tbody tr", has_text="running").first.click()
                expect(watched.page.locator("#detail")).to_be_visible()
                watched.screenshot("task-detail.png")

            leased = int(watched.figure("boefje", "leased").inner_text().replace(",", ""))
            _pop(http)
            expect(watched.depth("boefje")).to_have_text(f"{before + 4:,}", timeout=SETTLE)
            expect(watched.figure("boefje", "leased")).to_have_text(f"{leased + 1:,}", timeout=SETTLE)
            assert watched.navigations == 1, "the page reloaded"
            assert watched.errors == []
            assert watched.outside_requests() == []
            assert any(url.endswith("/dashboard/overview") for url in watched.requests)
        finally:
            watched.close()


def test_limit_groups_show_once_rules_are_configured(browser, settings):
    limits = '[{"boefje": "nmap", "group": "nmap", "concurrency": 2}]'
    with serving(settings, "serve", **TOKENS, REDISCHED_LIMITS=limits) as base_url, httpx.Client(base_url=base_url) as http:
        _push(http, 2, boefjes=("nmap",), tag="lim")
        _pop(http)
        watched = Watched(browser, base_url)
        try:
            watched.sign_in("viewer-secret")
            expect(watched.page.locator("#limits-section")).to_be_visible(timeout=SETTLE)
            row = watched.page.locator("#limits tbody tr", has_text="nmap")
            expect(row).to_contain_text("1 / 2", timeout=SETTLE)
            assert watched.errors == []
        finally:
            watched.close()


def test_requeue_works_for_admin_and_is_refused_for_a_viewer(browser, server):
    with httpx.Client(base_url=server) as http:
        _push(http, 3, orgs=("org-a",), boefjes=("nmap", "dns-records"), tag="rq")
        admin_task, viewer_task = _pop(http), _pop(http)

        admin = Watched(browser, server)
        try:
            admin.sign_in("admin-secret")
            _open_task(admin.page, admin_task["id"])
            expect(admin.page.locator("#detail ol.history li")).to_have_count(2, timeout=SETTLE)  # pushed, popped
            expect(admin.page.locator("#detail ol.history")).to_contain_text("popped")
            admin.page.click('#detail [data-action="requeue"]')
            expect(admin.page.locator("#detail .result")).to_contain_text("now queued", timeout=SETTLE)
            assert http.get(f"/tasks/{admin_task['id']}", headers=ADMIN).json()["status"] == "queued"
            assert admin.errors == [] and admin.outside_requests() == []
        finally:
            admin.close()

        viewer = Watched(browser, server)
        try:
            viewer.sign_in("viewer-secret")
            expect(viewer.page.locator("#role")).to_contain_text("read-only")
            _open_task(viewer.page, viewer_task["id"])
            expect(viewer.page.locator('#detail [data-action="requeue"]')).to_be_disabled()
            viewer.screenshot("viewer.png", viewer.page.locator("section", has=viewer.page.locator("#search")))
            # The button is only a courtesy: the server refuses the viewer's token itself.
            status = viewer.page.evaluate(
                """id => api(`/tasks/${id}`, {method: "PATCH", json: {status: "queued"}}).then(() => 200, e => e.status)""",
                viewer_task["id"],
            )
            assert status == 403
            assert http.get(f"/tasks/{viewer_task['id']}", headers=ADMIN).json()["status"] == "dispatched"
            assert [e for e in viewer.errors if "403" not in e] == []
            assert viewer.outside_requests() == []
        finally:
            viewer.close()


def _open_task(page: Page, task_id: str) -> None:
    page.fill('#search input[name="id"]', task_id)
    page.click('#search button[type="submit"]')
    expect(page.locator("#detail h3")).to_contain_text(task_id, timeout=SETTLE)


def _depth(http: httpx.Client) -> int:
    return http.get("/schedulers/boefje", headers=ADMIN).json()["qsize"]


def _steady_load(http: httpx.Client, seconds: float) -> None:
    """For the screenshots only: a minute of pushes, pops and outcomes across organisations,
    bounded in time and count."""
    orgs = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
    boefjes = ("dns-records", "nmap", "ssl-version", "shodan", "wappalyzer")
    rng = random.Random(16)
    deadline, i = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and i < 20_000:
        wave = 1 + int(6 * (1 + rng.random()) * (1.2 + (i // 200) % 3))
        for _ in range(wave):
            org = rng.choices(orgs, weights=[40, 20, 10, 5, 3, 1])[0]
            body = boefje_push(f"Hostname|internet|s{i}.example", org=org, boefje_id=rng.choice(boefjes), priority=rng.randint(2, 500))
            http.post("/schedulers/boefje/push", json=body, headers=ADMIN)
            if i % 3 == 0:
                pushed = http.post("/schedulers/normalizer/push", json=_normalizer_push(org, i), headers=ADMIN)
                assert pushed.status_code == 201, pushed.text
            i += 1
        for scheduler, pops in (("boefje", wave - 1), ("normalizer", wave // 3)):
            for _ in range(pops):
                popped = http.post(f"/schedulers/{scheduler}/pop?limit=1", headers=RUNNER).json()["results"]
                if popped:
                    outcome = rng.choices(["completed", "running", "failed"], weights=[85, 10, 5])[0]
                    http.patch(f"/tasks/{popped[0]['id']}", json={"status": outcome}, headers=RUNNER)
        time.sleep(0.25)


def _normalizer_push(org: str, i: int) -> dict:
    boefje_meta = {"id": f"00000000-0000-4000-8000-{i:012d}", "boefje": {"id": "dns-records"},
                   "input_ooi": f"Hostname|internet|s{i}.example", "organization": org, "started_at": None, "ended_at": None}
    raw = {"id": f"10000000-0000-4000-8000-{i:012d}", "boefje_meta": boefje_meta, "mime_types": [{"value": "boefje/dns-records"}]}
    return {"organisation": org, "priority": 50, "data": {"normalizer": {"id": "kat_dns_normalize"}, "raw_data": raw}}  # fmt: skip
