// redisched dashboard: polls /dashboard/overview, draws the queues, and browses tasks through
// the API's own routes (/tasks, GET and PATCH /tasks/{id}) with the caller's bearer token.
// No framework, no build step, no request to any other origin.
"use strict";

const SCHEDULERS = ["boefje", "normalizer", "report"];
const TOKEN_KEY = "redisched.token";
const PAGE_SIZE = 25;
const state = { role: null, timer: null, failures: 0, selected: null, searched: false };

// --- small helpers --------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en");
const count = (n) => (n === null || n === undefined ? "–" : fmt.format(n));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.abs(seconds);
  const text = s < 1 ? `${Math.round(s * 1000)} ms` : s < 90 ? `${s.toFixed(s < 10 ? 1 : 0)} s`
    : s < 5400 ? `${Math.round(s / 60)} min` : s < 172800 ? `${(s / 3600).toFixed(1)} h` : `${Math.round(s / 86400)} d`;
  return seconds < 0 ? `−${text}` : text;
}

function bytes(n) {
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

function ago(iso) {
  if (!iso) return "never";
  return `${duration((Date.now() - Date.parse(iso)) / 1000)} ago`;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

// --- the API, with the token ----------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}

async function api(path, options = {}) {
  const headers = { accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new HttpError(response.status, detail);
  }
  return body;
}

// --- sign in --------------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(state.timer);
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  // With auth on, the page asks for a token before it asks for any figure.
fetch("/dashboard/auth", { cache: "no-store", credentials: "omit" })
  .then((response) => response.json())
  .then(({ required }) => (required && !sessionStorage.getItem(TOKEN_KEY) ? showLogin("") : refresh()))
  .catch(() => refresh());
});

$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.role = null;
  showLogin("");
});

// --- the live figures -----------------------------------------------------------------------

async function refresh() {
  clearTimeout(state.timer);
  let delay = 2;
  try {
    const overview = await api("/dashboard/overview");
    delay = overview.refresh_seconds;
    state.failures = 0;
    render(overview);
    if (!state.searched) { state.searched = true; search(null); }
  } catch (error) {
    if (error.status === 401) return showLogin(sessionStorage.getItem(TOKEN_KEY) ? "That token was not accepted." : "");
    if (error.status === 403) return showLogin("That token may not read the dashboard.");
    state.failures++;
    setLive("stale", `no answer (${error.detail || error.message})`);
    delay = Math.min(30, 2 * state.failures);
  }
  state.timer = setTimeout(refresh, delay * 1000);
}

function setLive(kind, text) {
  $("live").className = `live ${kind}`;
  $("live-text").textContent = text;
}

function render(data) {
  $("login").hidden = true;
  $("main").hidden = false;
  if (state.role !== data.role) {
    state.role = data.role;
    const badge = $("role");
    badge.hidden = false;
    badge.textContent = data.role === "admin" ? "admin" : "viewer · read-only";
    badge.className = `badge ${data.role}`;
    $("signout").hidden = !sessionStorage.getItem(TOKEN_KEY);
    if (state.selected) showTask(state.selected);
  }
  setLive("ok", `live · ${new Date(data.now).toISOString().slice(11, 19)} UTC`);
  renderFacts(data);
  const banner = $("banner");
  banner.hidden = !data.history_error;
  banner.textContent = data.history_error ? `History figures missing: ${data.history_error}. Queue figures are live from Redis.` : "";
  $("rate-note").textContent = `tasks per second, last ${Math.round((data.schedulers[0]?.rates.push.length || 0) * data.bucket_seconds / 60)} minutes`;
  for (const figures of data.schedulers) renderQueue(figures, data);
  renderOrganisations(data);
  renderLimits(data);
  renderSystem(data);
}

function renderSystem(data) {
  const rows = [];
  for (const q of data.schedulers) {
    rows.push(el("dt", {}, `${q.id} history lag`), el("dd", { "data-figure": `lag-${q.id}` }, `${duration(q.snapshot_lag_seconds)} · ${count(q.stream_backlog)} events in Redis`));
  }
  rows.push(el("dt", { title: "Events Postgres refused, set aside: GET /history/quarantine lists them" }, "quarantined events"),
    el("dd", { class: data.quarantined ? "alert" : null, "data-figure": "quarantined" }, count(data.quarantined)));
  rows.push(el("dt", {}, "Redis memory"), el("dd", {}, data.redis_max_memory ? `${bytes(data.redis_used_memory)} of ${bytes(data.redis_max_memory)}` : `${bytes(data.redis_used_memory)} (no maxmemory)`));
  const processes = data.api_processes.map((p) => el("li", {}, el("span", { class: "mono" }, p.name), el("span", { class: "muted" }, `${duration(p.seen_seconds_ago)} ago`)));
  $("system").replaceChildren(
    el("dl", {}, rows),
    el("div", {}, el("strong", {}, `API processes seen in the last 30 s: ${data.api_processes.length}`),
      processes.length ? el("ul", { id: "processes" }, processes) : el("p", { class: "muted" }, "none")));
}

function renderFacts(data) {
  const memory = data.redis_max_memory ? `${bytes(data.redis_used_memory)} / ${bytes(data.redis_max_memory)}` : bytes(data.redis_used_memory);
  const processes = data.api_processes.map((p) => `${p.name} (${duration(p.seen_seconds_ago)} ago)`).join("\n");
  const facts = [
    ["snapshot lag", duration(data.snapshot_lag_seconds), "How far the Postgres history is behind the queues"],
  ];
  if (data.quarantined) facts.push(["quarantined", count(data.quarantined), "Events Postgres refused, set aside"]);
  facts.push(["Redis", memory, "used_memory (maxmemory)"]);
  facts.push(["API processes", String(data.api_processes.length), processes || "none seen in the last 30 s"]);
  $("facts").replaceChildren(...facts.map(([label, value, title]) =>
    el("span", { title, "data-fact": label }, `${label} `, el("b", {}, value))));
}

function renderQueue(q, data) {
  let card = document.querySelector(`.queue[data-scheduler="${q.id}"]`);
  if (!card) {
    card = el("article", { class: "queue", "data-scheduler": q.id },
      el("header", {}, el("span", { class: "name" }, q.id), el("span", { class: "muted activity" }),
        el("span", { class: "depth" }, el("span", { class: "value" }), el("small", {}, "queued"))),
      el("canvas", { width: 600, height: 110, "aria-label": `${q.id} push and pop rates` }),
      el("div", { class: "legend" }),
      el("dl", { class: "figures" }),
      el("div", { class: "lease" }));
    $("queues").append(card);
  }
  card.querySelector(".depth .value").textContent = count(q.depth);
  card.querySelector(".activity").textContent = `last activity ${ago(q.last_activity)}`;
  const perSecond = rates(q, data);
  const last = (op) => perSecond[op].slice(-7, -1).reduce((a, b) => a + b, 0) / 6;  // last full minute
  card.querySelector(".legend").replaceChildren(
    el("span", { class: "push" }, el("i"), "push ", el("b", {}, last("push").toFixed(1)), "/s"),
    el("span", { class: "pop" }, el("i"), "pop ", el("b", {}, last("pop").toFixed(1)), "/s"),
    el("span", { class: "fail" }, el("i"), "failed ", el("b", { "data-figure": "failures" }, count(q.failures_last_minute)), "/min"));
  const statuses = q.statuses || {};
  const figures = [
    ["leased", count(q.leased), "Dispatched or running, holding a lease (Redis)", "leased"],
    ["dispatched", count(q.statuses ? statuses.dispatched : null), "History (Postgres)", "dispatched"],
    ["running", count(q.statuses ? statuses.running : null), "History (Postgres)", "running"],
    ["past timeout", count(q.past_timeout), "Leases expired, not yet taken back by the reaper", "past_timeout", q.past_timeout > 0],
    ["completed", count(q.statuses ? statuses.completed : null), "History (Postgres), all time", "completed"],
    ["failed", count(q.statuses ? statuses.failed : null), "History (Postgres), all time", "failed"],
    ["cancelled", count(q.statuses ? statuses.cancelled : null), "History (Postgres), all time", "cancelled"],
    ["history lag", duration(q.snapshot_lag_seconds), "How far Postgres is behind this queue", "lag", q.snapshot_lag_seconds > 5],
  ];
  card.querySelector(".figures").replaceChildren(...figures.map(([label, value, title, key, alert]) =>
    el("div", { title }, el("dt", {}, label), el("dd", { class: alert ? "alert" : null, "data-figure": key }, value))));
  const lease = card.querySelector(".lease");
  if (q.next_lease) {
    const l = q.next_lease;
    lease.className = `lease${l.expires_in_seconds < 0 ? " alert" : ""}`;
    lease.replaceChildren("oldest lease: ", el("a", { href: "#", class: "mono", onclick: (e) => { e.preventDefault(); showTask(l.task_id); } }, l.task_id.slice(0, 8)),
      ` ${l.status} for ${duration(l.held_seconds)}, `,
      l.expires_in_seconds < 0 ? `past its timeout by ${duration(-l.expires_in_seconds)}` : `expires in ${duration(l.expires_in_seconds)}`);
  } else {
    lease.className = "lease";
    lease.textContent = "no lease held";
  }
  drawChart(card.querySelector("canvas"), perSecond, data.bucket_seconds);
}

// Per-bucket counts as tasks per second; the newest bucket is still filling: divide by the
// seconds it has run so far.
function rates(q, data) {
  const seconds = data.bucket_seconds;
  const elapsed = Math.max(1, (Date.parse(data.now) / 1000) % seconds);
  const out = {};
  for (const [op, counts] of Object.entries(q.rates)) {
    out[op] = counts.map((n, i) => n / (i === counts.length - 1 ? elapsed : seconds));
  }
  return out;
}

function drawChart(canvas, perSecond, bucketSeconds) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 110;
  if (canvas.width !== Math.round(width * ratio)) { canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const n = perSecond.push.length;
  const left = 34, right = 6, top = 8, bottom = 16;
  const plotW = width - left - right, plotH = height - top - bottom;
  const peak = Math.max(1, ...perSecond.push, ...perSecond.pop, ...perSecond.fail);
  const scale = niceCeiling(peak);
  const x = (i) => left + (n <= 1 ? plotW : (i / (n - 1)) * plotW);
  const y = (v) => top + plotH - (v / scale) * plotH;

  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = color("--muted");
  ctx.strokeStyle = color("--line");
  ctx.lineWidth = 1;
  for (const fraction of [0, 0.5, 1]) {
    const gy = Math.round(y(scale * fraction)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, gy); ctx.lineTo(width - right, gy); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(shortNumber(scale * fraction), left - 4, gy);
  }
  ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
  ctx.fillText(`−${Math.round((n * bucketSeconds) / 60)} min`, left, height - 3);
  ctx.textAlign = "right";
  ctx.fillText("now", width - right, height - 3);

  const barW = Math.max(1, plotW / n - 1);
  ctx.fillStyle = color("--fail");
  perSecond.fail.forEach((v, i) => { if (v > 0) ctx.fillRect(x(i) - barW / 2, y(v), barW, top + plotH - y(v)); });
  for (const op of ["push", "pop"]) {
    ctx.strokeStyle = color(`--${op}`);
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    perSecond[op].forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
  }
}

function niceCeiling(v) {
  const magnitude = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((c) => c >= v);
}

function shortNumber(v) {
  return v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k` : v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1);
}

function renderOrganisations(data) {
  const rows = data.organisations.map((o) => el("tr", { "data-organisation": o.organisation },
    el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); searchFor({ organisation: o.organisation }); } }, o.organisation)),
    el("td", { class: "num" }, count(o.depth)),
    ...SCHEDULERS.map((sid) => el("td", { class: "num" }, count(o.depth_by_scheduler[sid] || 0))),
    el("td", { class: "num" }, count(o.served)),
    el("td", {}, shareBar(o.share_served)),
    // The fair pop's weight (REDISCHED_FAIRNESS=organisation); "–" without fairness.
    el("td", { class: "num muted" }, o.weight === null || o.weight === undefined ? "–" : String(o.weight))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 8 }, "No organisation has queued tasks.")));
  $("orgs").tBodies[0].replaceChildren(...rows);
  $("org-note").textContent = data.organisations_capped ? `(the first ${data.organisations.length} with queued tasks, by name, per queue)` : "with queued tasks";
}

function shareBar(share) {
  if (share === null || share === undefined) return "–";
  const bar = el("span", {});
  bar.style.width = `${Math.round(share * 100)}%`;
  return [el("span", { class: "share" }, bar), `${(share * 100).toFixed(1)} %`];
}

// Limits per group: the section shows once limit rules are configured (limits is null without);
// each row is {scheduler, group, in_use, limit, spacing_seconds, next_allowed_at, waiting}.
function renderLimits(data) {
  const limits = data.limits;
  const section = $("limits-section");
  section.hidden = !limits;
  if (section.hidden) return;
  $("limits-note").textContent = data.limits_capped ? "(the latest pushed groups, per queue)" : "";
  $("limits").tBodies[0].replaceChildren(...limits.map((l) => el("tr", {},
    el("td", {}, l.group),
    el("td", { class: "num" }, `${count(l.in_use)} / ${l.limit === null ? "–" : count(l.limit)}`),
    el("td", {}, l.next_allowed_at ? when(l.next_allowed_at) : "now"),
    el("td", { class: "num" }, count(l.waiting)))));
}

// --- the task browser -----------------------------------------------------------------------

function filterFrom(form) {
  const leaves = [];
  const boefje = form.boefje.value.trim();
  const normalizer = form.normalizer.value.trim();
  if (boefje) leaves.push({ column: "data", field: "boefje__id", operator: "eq", value: boefje });
  if (normalizer) leaves.push({ column: "data", field: "normalizer__id", operator: "eq", value: normalizer });
  return leaves.length ? { filters: { and: leaves } } : null;
}

async function search(event, offset = 0) {
  if (event) event.preventDefault();
  const form = $("search");
  const note = $("search-note");
  const id = form.id.value.trim();
  if (id) return showTask(id, true);
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset });
  for (const name of ["scheduler_id", "organisation", "status"]) {
    const value = form[name].value.trim();
    if (value) params.set(name, value);
  }
  let body = filterFrom(form);
  const typed = form.filter.value.trim();
  if (typed && typed !== form.filter.dataset.generated) {
    try { body = JSON.parse(typed); } catch (error) { note.textContent = `The filter is not JSON: ${error.message}`; return; }
  } else {
    form.filter.value = body ? JSON.stringify(body, null, 1) : "";
    form.filter.dataset.generated = form.filter.value;
  }
  note.textContent = "searching…";
  try {
    const page = await api(`/tasks?${params}`, body ? { method: "POST", json: body } : {});
    renderResults(page, offset);
  } catch (error) {
    note.textContent = `Search refused: ${error.detail || error.message}`;
  }
}

function renderResults(page, offset) {
  const rows = page.results.map((t) => el("tr", { "data-task": t.id, class: t.id === state.selected ? "selected" : null, onclick: () => showTask(t.id) },
    el("td", { class: "mono", title: t.id }, t.id.slice(0, 8)),
    el("td", {}, t.scheduler_id),
    el("td", {}, t.organisation),
    el("td", { class: "mono what", title: describe(t) }, describe(t)),
    el("td", { class: "num" }, count(t.priority)),
    el("td", {}, el("span", { class: `status ${t.status}` }, t.status)),
    el("td", { title: t.created_at }, ago(t.created_at)),
    el("td", { title: t.modified_at }, ago(t.modified_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 8 }, "No task matches.")));
  $("results").tBodies[0].replaceChildren(...rows);
  const note = $("search-note");
  note.replaceChildren(`${count(page.count)} tasks`, page.count ? `, ${offset + 1}–${offset + page.results.length} shown ` : " ");
  if (offset > 0) note.append(el("button", { type: "button", onclick: () => search(null, Math.max(0, offset - PAGE_SIZE)) }, "previous"));
  if (offset + PAGE_SIZE < page.count) note.append(" ", el("button", { type: "button", onclick: () => search(null, offset + PAGE_SIZE) }, "next"));
}

function describe(task) {
  const d = task.data || {};
  if (d.boefje) return `${d.boefje.id} · ${d.input_ooi || ""}`;
  if (d.normalizer) return `${d.normalizer.id} · ${d.raw_data?.boefje_meta?.input_ooi || ""}`;
  if (d.report_recipe_id) return `recipe ${d.report_recipe_id}`;
  return "";
}

function searchFor(fields) {
  const form = $("search");
  for (const name of ["id", "scheduler_id", "organisation", "boefje", "normalizer", "status", "filter"]) form[name].value = fields[name] || "";
  search(null);
}

async function showTask(id, fromSearch = false) {
  const detail = $("detail");
  state.selected = id;
  document.querySelectorAll("#results tbody tr").forEach((row) => row.classList.toggle("selected", row.dataset.task === id));
  let task;
  try {
    task = await api(`/tasks/${encodeURIComponent(id)}`);
  } catch (error) {
    if (fromSearch) { $("search-note").textContent = `Task ${id}: ${error.detail || error.message}`; return; }
    detail.replaceChildren(el("h3", {}, "Task", closeButton()), el("p", { class: "error" }, error.detail || error.message));
    openDetail();
    return;
  }
  if (fromSearch) renderResults({ count: 1, results: [task] }, 0);
  let history = null;
  try { history = await api(`/dashboard/tasks/${encodeURIComponent(task.id)}/history`); } catch (error) { history = null; }
  detail.replaceChildren(
    el("h3", {}, el("span", { class: "mono" }, task.id), el("span", { class: `status ${task.status}` }, task.status), closeButton()),
    el("dl", {},
      el("dt", {}, "scheduler"), el("dd", {}, task.scheduler_id),
      el("dt", {}, "organisation"), el("dd", {}, task.organisation),
      el("dt", {}, "what"), el("dd", { class: "mono" }, describe(task) || "–"),
      el("dt", {}, "priority"), el("dd", { "data-field": "priority" }, String(task.priority)),
      el("dt", {}, "schedule"), el("dd", { class: "mono" }, task.schedule_id || "–"),
      el("dt", {}, "hash"), el("dd", { class: "mono" }, task.hash || "–")),
    el("div", {}, el("strong", {}, "Status history"), historyList(history, task)),
    actions(task),
    el("details", {}, el("summary", {}, "data"), el("pre", {}, JSON.stringify(task.data, null, 2))));
  openDetail();
}

const VERBS = { push: "pushed", pop: "popped", patch: "patched", reap: "lease expired", requeue: "handed back", restore: "restored" };

function historyList(history, task) {
  const rows = history && history.length ? history : [
    { op: "push", status: "queued", at: task.created_at },
    ...(task.modified_at !== task.created_at ? [{ op: "patch", status: task.status, at: task.modified_at }] : []),
  ];
  return el("ol", { class: "history" }, rows.map((change) => el("li", {},
    `${new Date(change.at).toISOString().replace("T", " ").slice(0, 23)} `, el("span", { class: `status ${change.status}` }, change.status), ` ${VERBS[change.op] || change.op}`)));
}

function closeButton() {
  return el("button", { type: "button", class: "ghost close", onclick: () => { $("detail").hidden = true; document.querySelector(".tasks").classList.remove("open"); state.selected = null; } }, "×");
}

function openDetail() {
  $("detail").hidden = false;
  document.querySelector(".tasks").classList.add("open");
}

function actions(task) {
  const admin = state.role === "admin";
  const result = el("span", { class: "result", role: "status" });
  const priority = el("input", { type: "number", name: "priority", value: task.priority, step: 1, disabled: !admin });
  const act = async (label, changes) => {
    result.className = "result";
    result.textContent = `${label}…`;
    try {
      const patched = await api(`/tasks/${task.id}`, { method: "PATCH", json: changes });
      result.className = "result ok";
      result.textContent = `${label}: now ${patched.status}, priority ${patched.priority}`;
      setTimeout(() => showTask(task.id), 600);
      // With auth on, the page asks for a token before it asks for any figure.
fetch("/dashboard/auth", { cache: "no-store", credentials: "omit" })
  .then((response) => response.json())
  .then(({ required }) => (required && !sessionStorage.getItem(TOKEN_KEY) ? showLogin("") : refresh()))
  .catch(() => refresh());
    } catch (error) {
      result.className = "result error";
      result.textContent = `${label} refused (${error.status}): ${error.detail}`;
    }
  };
  const finished = ["completed", "failed", "cancelled"].includes(task.status);
  return el("div", { class: "actions" },
    el("button", { type: "button", "data-action": "requeue", disabled: !admin || task.status === "queued", onclick: () => act("Requeue", { status: "queued" }) }, "Requeue"),
    el("button", { type: "button", class: "danger", "data-action": "cancel", disabled: !admin || finished, onclick: () => act("Cancel", { status: "cancelled" }) }, "Cancel"),
    priority,
    el("button", { type: "button", "data-action": "priority", disabled: !admin, onclick: () => act("Priority", { priority: Number(priority.value) }) }, "Set priority"),
    admin ? null : el("span", { class: "note" }, "read-only token: actions need an admin token"),
    result);
}

$("search").addEventListener("submit", (event) => search(event));

// With auth on, the page asks for a token before it asks for any figure.
fetch("/dashboard/auth", { cache: "no-store", credentials: "omit" })
  .then((response) => response.json())
  .then(({ required }) => (required && !sessionStorage.getItem(TOKEN_KEY) ? showLogin("") : refresh()))
  .catch(() => refresh());
