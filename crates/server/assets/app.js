// The dashboard: renders what the server's one fold of the event stream (GET /api/missions/{id})
// says, and uses the mission's server-sent events only to know when to fetch it again.
"use strict";

const REFRESH_MS = 300; // at most this often per mission while events arrive
const LIST_MS = 5000; // the mission list, in case a mission started elsewhere

const state = {
  selected: null, // mission id
  detail: null, // the last GET /api/missions/{id}
  events: null, // EventSource of the selected mission
  refreshTimer: null,
  refreshing: false,
  refreshAgain: false,
  // The pictures are fetched when the fold has moved on since they were drawn, one fetch at a time.
  picturesSeq: null,
  picturesLoading: false,
  chosenUnit: null, // the unit picked in a picture, highlighted in the tree and the pictures
  // The repository field is prefilled with the first known repository once, and only while the user
  // has not touched it: a prefill that lands after they focused the field would be typed into (a path
  // typed into the emptied field came out twice) or would undo their clearing it.
  repoPrefill: true,
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "title") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: options.body ? { "Content-Type": "application/json" } : {},
    ...options,
  });
  $("auth-banner").hidden = response.status !== 401;
  let body = null;
  const text = await response.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { error: text };
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `${response.status} ${response.statusText}`, body);
  }
  return body;
}

// ---- formatting ----

function tokens(n) {
  if (!n) return "0";
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

/** Every kind of token: plain input, cache reads and writes (absent when 0), output. */
function usageTotal(usage) {
  if (!usage) return 0;
  const kinds = ["input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens"];
  return kinds.reduce((sum, kind) => sum + (usage[kind] || 0), 0);
}

function cost(usd) {
  return usd ? `$${usd.toFixed(usd < 1 ? 4 : 2)}` : "—";
}

function clock(ms) {
  const secs = Math.max(0, Math.floor(ms / 1000));
  const two = (n) => String(n).padStart(2, "0");
  const h = Math.floor(secs / 3600);
  const m = Math.floor(secs / 60) % 60;
  return h ? `${h}:${two(m)}:${two(secs % 60)}` : `${two(m)}:${two(secs % 60)}`;
}

const words = (s) => (s || "").replaceAll("_", " ");

function badge(value, testid) {
  return el("span", { class: `badge state-${value}`, "data-testid": testid }, words(value));
}

/** What the mission is doing now, in one word. */
function missionState(d) {
  // Killed or crashed, a mission has no outcome yet; its record still says running.
  if (!d.running && d.state === "interrupted") return "interrupted";
  if (d.outcome && !d.running) return d.outcome;
  if (d.running) return d.paused ? "paused" : "running";
  return d.status;
}

// ---- the mission list ----

async function loadMissions() {
  let body;
  try {
    body = await api("/api/missions");
  } catch (error) {
    setConnection(
      error.status === 401
        ? "token needed: open the address with ?token= that orchestrator serve printed"
        : `cannot list missions: ${error.message}`,
    );
    return;
  }
  const list = $("mission-list");
  list.replaceChildren(
    ...body.missions.map((m) => {
      const current = m.id === state.selected;
      const shown = m.running ? "running" : m.state === "interrupted" ? "interrupted" : m.outcome || m.status;
      return el(
        "li",
        { class: "mission-row" },
        el(
          "button",
          {
            type: "button",
            class: current ? "mission-item current" : "mission-item",
            "data-testid": "mission-item",
            "data-mission": m.id,
            "aria-current": current ? "true" : null,
            onclick: () => select(m.id),
          },
          el("span", { class: "objective" }, m.objective.split("\n")[0]),
          el("span", { class: "meta" }, badge(shown, "mission-item-state"), " ", m.repo),
        ),
        m.state === "interrupted" && !m.running ? resumeButton(m.id, "resume-item") : null,
      );
    }),
  );
  $("no-missions").hidden = body.missions.length > 0;
  const repos = $("known-repos");
  repos.replaceChildren(...body.repos.map((r) => el("option", { value: r.path })));
  const repoInput = $("start-repo");
  // The focus check too: the focus event alone may come late when the window itself has no focus.
  if (state.repoPrefill && document.activeElement !== repoInput && body.repos.length > 0) {
    state.repoPrefill = false;
    if (!repoInput.value) repoInput.value = body.repos[0].path;
  }
}

// ---- one mission ----

function select(id) {
  if (state.selected === id) return;
  state.selected = id;
  state.detail = null;
  state.picturesSeq = null;
  state.chosenUnit = null;
  for (const box of ["plan-graph", "timeline", "usage-chart"]) $(box).replaceChildren();
  history.replaceState(null, "", `#mission=${encodeURIComponent(id)}`);
  if (state.events) state.events.close();
  state.events = null;
  $("mission").hidden = false;
  $("pick-mission").hidden = true;
  $("mission-error").hidden = true;
  refresh();
  follow(id);
  loadMissions();
}

/** Server-sent events: each one only says "something changed"; the view comes from the server. */
function follow(id) {
  const source = new EventSource(`/api/missions/${encodeURIComponent(id)}/events`);
  state.events = source;
  let finished = false;
  source.onopen = () => {
    finished = false;
    setConnection("live");
  };
  source.onmessage = (message) => {
    let event = null;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    finished = event.type === "mission_finished";
    if (finished) setConnection("mission finished");
    scheduleRefresh();
    if (event.type === "mission_started" || finished) loadMissions();
  };
  // The server ends the stream once the mission has stopped; the browser reconnects, gets
  // 204 No Content (nothing more) and closes the source. A mission that goes on is followed on.
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      if (!finished) setConnection("not live");
      refresh();
    } else if (!finished) setConnection("reconnecting…");
  };
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refresh();
  }, REFRESH_MS);
}

async function refresh() {
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  const id = state.selected;
  if (!id) return;
  state.refreshing = true;
  try {
    const detail = await api(`/api/missions/${encodeURIComponent(id)}`);
    if (id === state.selected) {
      state.detail = detail;
      render(detail);
    }
  } catch (error) {
    showMissionError(error.message);
  } finally {
    state.refreshing = false;
    if (state.refreshAgain) {
      state.refreshAgain = false;
      scheduleRefresh();
    }
  }
}

function render(d) {
  const shown = missionState(d);
  const section = $("mission");
  section.dataset.state = shown;
  section.dataset.mission = d.id;
  $("mission-objective").textContent = d.objective || "(starting…)";
  $("mission-id").textContent = d.id;
  $("mission-repo").textContent = d.repo;
  $("mission-status").replaceChildren(badge(shown, "mission-state"));
  $("mission-phase").textContent = words(d.phase) || "starting";
  $("mission-round").textContent = d.round || "—";
  const c = d.counts;
  $("mission-counts").textContent =
    c.total === 0
      ? "none yet"
      : `${c.passed}/${c.total} passed · ${c.active} active · ${c.queued} queued` +
        (c.failed + c.skipped ? ` · ${c.failed} failed · ${c.skipped} skipped` : "");
  $("mission-tokens").textContent = tokens(usageTotal(d.usage));
  $("mission-cost").textContent = cost(d.cost_usd);
  $("mission-outcome").textContent = d.outcome && !d.running ? d.outcome : "—";
  $("mission-outcome").dataset.outcome = d.outcome && !d.running ? d.outcome : "";
  const summary = $("mission-summary");
  summary.hidden = !(d.summary && !d.running);
  summary.textContent = d.summary || "";
  renderControls(d);
  renderPlan(d);
  renderTree(d);
  renderSessions(d);
  renderRoles(d);
  renderNotices(d);
  markChosen();
  tick();
  loadPictures(d);
}

// ---- pictures ----

/** Fetches the SVG pictures when the mission's fold has moved past what they show. */
async function loadPictures(d) {
  if (state.picturesLoading || d.last_seq === state.picturesSeq) return;
  const id = d.id;
  state.picturesLoading = true;
  try {
    const pictures = await api(`/api/missions/${encodeURIComponent(id)}/pictures`);
    if (id !== state.selected) return;
    state.picturesSeq = pictures.last_seq;
    showPicture("plan-graph", pictures.graph);
    showPicture("timeline", pictures.timeline);
    showPicture("usage-chart", pictures.usage);
    markChosen();
  } catch (error) {
    showMissionError(`cannot draw the pictures: ${error.message}`);
  } finally {
    state.picturesLoading = false;
  }
  // Events that arrived during the fetch: draw again from the newest fold.
  if (state.detail && state.detail.id === id && state.detail.last_seq !== state.picturesSeq) {
    loadPictures(state.detail);
  }
}

/** Puts one SVG into its box, as parsed nodes (never innerHTML), without anything that could run. */
function showPicture(boxId, svgText) {
  const parsed = new DOMParser().parseFromString(svgText || "", "image/svg+xml");
  const root = parsed.documentElement;
  const box = $(boxId);
  if (!root || root.nodeName !== "svg" || parsed.querySelector("parsererror")) {
    box.replaceChildren(el("p", { class: "muted" }, "This picture could not be drawn."));
    return;
  }
  for (const node of root.querySelectorAll("script, foreignObject")) node.remove();
  for (const node of [root, ...root.querySelectorAll("*")]) {
    for (const attr of [...node.attributes]) {
      if (attr.name.toLowerCase().startsWith("on")) node.removeAttribute(attr.name);
    }
  }
  const svg = document.importNode(root, true);
  svg.addEventListener("click", (event) => {
    const target = event.target.closest("[data-unit]");
    if (target) chooseUnit(target.getAttribute("data-unit"));
  });
  box.replaceChildren(svg);
}

/** A unit picked in a picture: highlighted everywhere and its row scrolled into view. */
function chooseUnit(unit) {
  state.chosenUnit = state.chosenUnit === unit ? null : unit;
  markChosen();
  const row = state.chosenUnit && document.querySelector(`tr[data-unit="${CSS.escape(unit)}"]`);
  if (row) row.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function markChosen() {
  for (const node of document.querySelectorAll(".chosen")) node.classList.remove("chosen");
  if (!state.chosenUnit) return;
  const selector = `[data-unit="${CSS.escape(state.chosenUnit)}"]`;
  for (const node of document.querySelectorAll(`#unit-rows ${selector}, .picture ${selector}`)) {
    node.classList.add("chosen");
  }
}

function renderControls(d) {
  const pause = $("pause-button");
  pause.textContent = d.paused ? "Resume dispatch" : "Pause dispatch";
  pause.disabled = !d.controllable;
  pause.title = d.controllable ? "" : "Only missions this server runs can be paused";
  $("cancel-button").disabled = !d.running;
  $("resume-button").hidden = !(d.state === "interrupted" && !d.running);
}

/** A button that continues an interrupted mission in this server. */
function resumeButton(id, testid) {
  return el(
    "button",
    { type: "button", class: "resume", "data-testid": testid, "data-mission": id, onclick: () => resumeMission(id) },
    "Resume",
  );
}

/** Continues an interrupted mission (killed, crashed, cancelled) where it stopped, in this server. */
async function resumeMission(id) {
  showMissionError("");
  try {
    await api(`/api/missions/${encodeURIComponent(id)}/resume`, { method: "POST" });
    $("start-error").hidden = true;
    if (state.selected === id) {
      // Follow its new run: the old stream ended when it stopped.
      state.selected = null;
    }
    select(id);
  } catch (error) {
    if (state.selected === id) showMissionError(error.message);
    else showStartError(error);
  }
  loadMissions();
}

/** The plan waiting for approval (`--approve-plan`), with its units and what each waits for. */
function renderPlan(d) {
  const plan = d.waiting_plan;
  $("plan-section").hidden = !plan;
  if (!plan) return;
  $("plan-attempt").textContent = plan.attempt;
  const items = plan.units.map((u) =>
    el(
      "li",
      { "data-unit": u.id },
      el("span", { class: "unit-id" }, u.id),
      " ",
      u.title,
      u.depends_on.length ? el("span", { class: "detail" }, ` after ${u.depends_on.join(", ")}`) : null,
    ),
  );
  $("plan-units").replaceChildren(...items);
}

async function answerPlan(body) {
  const id = state.selected;
  if (!id) return;
  showMissionError("");
  try {
    await api(`/api/missions/${encodeURIComponent(id)}/plan`, { method: "POST", body: JSON.stringify(body) });
    $("plan-feedback").value = "";
  } catch (error) {
    showMissionError(error.message);
  }
  refresh();
}

async function tellWorker(event) {
  event.preventDefault();
  const id = state.selected;
  if (!id) return;
  const unit = $("tell-unit").value.trim();
  const message = $("tell-message").value.trim();
  const body = unit ? { unit, message } : { all: true, message };
  showMissionError("");
  try {
    await api(`/api/missions/${encodeURIComponent(id)}/tell`, { method: "POST", body: JSON.stringify(body) });
    $("tell-message").value = "";
  } catch (error) {
    showMissionError(error.message);
  }
  refresh();
}

// A unit row's "message" button names its unit in the form below the tree (rows are redrawn on every
// refresh, so the form lives outside them).
function tellButton(unit) {
  const button = el("button", { type: "button", class: "tell-unit", "data-testid": "tell-unit-button", title: `Message ${unit}'s worker` }, "✉");
  button.addEventListener("click", () => {
    $("tell-unit").value = unit;
    $("tell-message").focus();
  });
  return button;
}

function renderTree(d) {
  const units = new Map(d.units.map((u) => [u.id, u]));
  const live = new Map();
  for (const s of d.sessions) if (s.ok === null && s.unit) live.set(s.unit, s);
  const rows = d.tree
    .map(({ unit, depth }) => [units.get(unit), depth])
    .filter(([u]) => u)
    .map(([u, depth]) => {
      const session = live.get(u.id);
      const title = el(
        "td",
        { class: "unit-title" },
        el("span", { class: "unit-id" }, u.id),
        " ",
        u.title,
        u.detail ? el("span", { class: "detail" }, u.detail) : null,
        d.running && !["passed", "failed", "skipped", "merging"].includes(u.state) ? tellButton(u.id) : null,
      );
      title.style.setProperty("--depth", depth);
      return el(
        "tr",
        { "data-testid": "unit-row", "data-unit": u.id, "data-state": u.state, "data-depth": depth },
        title,
        el("td", {}, badge(u.state, "unit-state")),
        el("td", {}, u.attempt || "—"),
        el("td", { class: "num" }, tokens(usageTotal(u.totals.usage))),
        el("td", { class: "num" }, cost(u.totals.cost_usd)),
        el(
          "td",
          { class: "session" },
          session
            ? `${words(session.role)} · ${session.model}${u.holder ? ` on ${u.holder.host}` : ""} · ${
                session.last_action || "starting"
              }`
            : "",
        ),
      );
    });
  $("unit-rows").replaceChildren(...rows);
  $("no-units").hidden = rows.length > 0;
}

function renderSessions(d) {
  const rows = d.sessions
    .filter((s) => s.ok === null)
    .map((s) =>
      el(
        "tr",
        { "data-testid": "session-row", "data-session": s.id },
        el("td", {}, el("code", {}, s.id)),
        el("td", {}, words(s.role)),
        el("td", {}, s.unit || "—"),
        el("td", {}, s.model),
        el("td", { class: "num" }, s.turns),
        el("td", { class: "num" }, tokens(usageTotal(s.totals.usage))),
        el("td", {}, s.last_action || "starting"),
      ),
    );
  $("session-rows").replaceChildren(...rows);
  $("no-sessions").hidden = rows.length > 0;
}

function renderRoles(d) {
  const rows = Object.entries(d.roles).map(([role, t]) =>
    el(
      "tr",
      { "data-testid": "role-row", "data-role": role },
      el("td", {}, words(role)),
      el("td", { class: "num" }, t.calls),
      el("td", { class: "num" }, tokens(t.usage.input_tokens)),
      el("td", { class: "num" }, tokens(t.usage.cache_read_tokens || 0)),
      el("td", { class: "num" }, tokens(t.usage.cache_write_tokens || 0)),
      el("td", { class: "num" }, tokens(t.usage.output_tokens)),
      el("td", { class: "num" }, cost(t.cost_usd)),
    ),
  );
  $("role-rows").replaceChildren(...rows);
}

function renderNotices(d) {
  $("notices").replaceChildren(...d.notices.map((n) => el("li", {}, n)));
  $("notices-section").hidden = d.notices.length === 0;
}

/** The elapsed clock runs in the page between refreshes. */
function tick() {
  const d = state.detail;
  if (!d || !d.started_at) {
    $("mission-elapsed").textContent = "—";
    return;
  }
  const start = Date.parse(d.started_at);
  const end = d.finished_at && !d.running ? Date.parse(d.finished_at) : Date.now();
  $("mission-elapsed").textContent = clock(end - start);
}

function showMissionError(message) {
  const box = $("mission-error");
  box.textContent = message;
  box.hidden = !message;
}

async function steer(action) {
  const id = state.selected;
  if (!id) return;
  showMissionError("");
  try {
    await api(`/api/missions/${encodeURIComponent(id)}/${action}`, { method: "POST" });
  } catch (error) {
    showMissionError(error.message);
  }
  refresh();
}

async function cancelMission() {
  const id = state.selected;
  if (!id || !window.confirm(`Cancel mission ${id}? It stops cleanly and can be resumed later.`)) return;
  const button = $("cancel-button");
  button.disabled = true;
  button.textContent = "Cancelling…";
  await steer("cancel");
  button.textContent = "Cancel";
  loadMissions();
}

// ---- starting ----

function startBody(form) {
  const data = new FormData(form);
  const body = { repo: data.get("repo").trim(), objective: data.get("objective").trim() };
  for (const key of ["max_parallel", "rounds", "budget_tokens"]) {
    const value = data.get(key);
    if (value) body[key] = Number(value);
  }
  const model = (data.get("model") || "").trim();
  if (model) body.model = model;
  body.allow_dirty = data.get("allow_dirty") === "on";
  body.apply = data.get("apply") === "on";
  if (data.get("approve_plan") === "on") body.approve_plan = true;
  return body;
}

/** A refused start, and when an interrupted mission was in the way, the two ways on as buttons. */
function showStartError(e, form) {
  const error = $("start-error");
  error.replaceChildren(e.message);
  const interrupted = (e.body && e.body.interrupted) || [];
  if (interrupted.length && form) {
    const ways = el(
      "span",
      { class: "ways" },
      ...interrupted.map((m) => resumeButton(m.id, "start-resume")),
      el(
        "button",
        {
          type: "button",
          class: "danger",
          "data-testid": "start-abandon",
          onclick: () => {
            const ids = interrupted.map((m) => m.id).join(", ");
            if (window.confirm(`Abandon ${ids}? Its worktrees and branches are removed; its log stays.`)) {
              startMission(null, form, true);
            }
          },
        },
        "Abandon it and start",
      ),
    );
    error.append(ways);
  }
  error.hidden = false;
}

async function startMission(event, given, abandon) {
  if (event) event.preventDefault();
  const form = given || event.target;
  const error = $("start-error");
  const submit = form.querySelector("button[type=submit]");
  error.hidden = true;
  submit.disabled = true;
  submit.textContent = "Starting…";
  try {
    const body = startBody(form);
    if (abandon) body.abandon_interrupted = true;
    const started = await api("/api/missions", { method: "POST", body: JSON.stringify(body) });
    form.elements.objective.value = "";
    await loadMissions();
    select(started.id);
  } catch (e) {
    showStartError(e, form);
  } finally {
    submit.disabled = false;
    submit.textContent = "Start mission";
  }
}

function setConnection(text) {
  $("connection").textContent = text;
}

function init() {
  $("start-form").addEventListener("submit", startMission);
  // Focus comes first (a click, a tab, Playwright's fill), so the prefill never writes under the cursor.
  for (const type of ["focus", "input"]) {
    $("start-repo").addEventListener(type, () => {
      state.repoPrefill = false;
    });
  }
  $("pause-button").addEventListener("click", () =>
    steer(state.detail && state.detail.paused ? "resume" : "pause"),
  );
  $("cancel-button").addEventListener("click", cancelMission);
  $("tell-form").addEventListener("submit", tellWorker);
  $("resume-button").addEventListener("click", () => state.selected && resumeMission(state.selected));
  $("approve-button").addEventListener("click", () => answerPlan({ answer: "approve" }));
  $("reject-form").addEventListener("submit", (event) => {
    event.preventDefault();
    answerPlan({ answer: "reject", feedback: $("plan-feedback").value.trim() });
  });
  setInterval(tick, 1000);
  setInterval(loadMissions, LIST_MS);
  loadMissions();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("mission");
  if (wanted) select(wanted);
}

init();
