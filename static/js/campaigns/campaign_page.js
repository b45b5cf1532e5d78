// The owner's campaign page: live snapshots over /ws/campaigns/<id>/ (falling back to polling
// live.json when WebSockets are blocked), the throughput chart, and the worker table.

import { createThroughputChart } from "./chart.js";
import { formatDuration, formatNumber } from "./format.js";

const root = document.getElementById("campaign");
const transitions = JSON.parse(document.getElementById("transitions").textContent);
const chart = createThroughputChart(
  document.getElementById("throughput-chart"),
  JSON.parse(document.getElementById("throughput-history").textContent),
);
const statusEl = document.getElementById("live-status");

function setField(name, text) {
  for (const el of root.querySelectorAll(`[data-field="${name}"]`)) el.textContent = text;
}

function setStatus(mode, text) {
  statusEl.dataset.mode = mode;
  statusEl.textContent = text;
}

let lastSnapshot = null;

function apply(s) {
  lastSnapshot = s;
  const pct = Math.floor(s.progress * 1000) / 10;
  const bar = document.getElementById("progress-bar");
  bar.style.width = `${pct}%`;
  bar.classList.toggle("is-done", s.state === "completed");
  bar.classList.toggle("is-failed", s.state === "failed");
  document.getElementById("progress").setAttribute("aria-valuenow", String(Math.floor(pct)));
  setField("percent", `${pct}%`);
  setField("tasks_done", formatNumber(s.tasks_done));
  setField("tasks_total", formatNumber(s.tasks_total));
  setField("tasks_unit", s.tasks_total === 1 ? "task" : "tasks");
  setField("tasks_failed", formatNumber(s.tasks_failed));
  const remaining = Math.max(0, s.tasks_total - s.tasks_done - s.tasks_failed);
  setField("remaining", formatNumber(remaining));
  setField("rate", s.rate >= 10 ? formatNumber(Math.round(s.rate)) : s.rate.toFixed(1));
  setField("workers", formatNumber(s.workers));
  setField("leased", formatNumber(s.leased));
  setField("eta", s.state === "running" && s.rate > 0 && remaining > 0 ? `· about ${formatDuration(remaining / s.rate)} left` : "");

  const badge = root.querySelector('[data-field="state"]');
  if (badge.textContent !== s.state) {
    badge.textContent = s.state;
    badge.className = `badge badge-${s.state}`;
    root.dataset.state = s.state;
  }
  for (const form of root.querySelectorAll("form[data-action]")) {
    if (!(form instanceof HTMLFormElement)) continue;
    form.hidden = !(transitions[form.dataset.action] || []).includes(s.state);
  }
  const error = /** @type {HTMLElement} */ (root.querySelector('[data-field="error"]'));
  error.textContent = s.error;
  error.hidden = !s.error;
  const note = /** @type {HTMLElement | null} */ (root.querySelector('[data-field="input_note"]'));
  if (note) note.hidden = s.input_state !== "generating";
  if (s.reduced_at && s.reduced_at !== root.dataset.reducedAt) {
    root.dataset.reducedAt = s.reduced_at;
    refreshReduced();
  }
  chart.push(s.t, s.rate);
}

async function refreshReduced() {
  const pre = document.getElementById("reduced-output");
  if (!pre) return;
  const res = await fetch(root.dataset.liveUrl + "?reduced=1", { cache: "no-store" });
  if (!res.ok) return;
  const data = await res.json();
  if (data.reduced != null) pre.textContent = data.reduced;
  setField("reduced_at", "just now");
}

// --- transport: WebSocket first, HTTP polling when it keeps failing -----------------------

let socket = null;
let failures = 0;
let pollTimer = null;

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}${root.dataset.wsPath}`);
  socket.addEventListener("open", () => {
    failures = 0;
    stopPolling();
    setStatus("live", "live");
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "snapshot") apply(message.snapshot);
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    if (event.code === 4403) {
      setStatus("off", "no live updates (signed out?)");
      return;
    }
    failures += 1;
    if (failures >= 2) startPolling();
    else setStatus("connecting", "reconnecting…");
    setTimeout(connect, Math.min(30000, 1000 * 2 ** failures));
  });
}

function startPolling() {
  if (pollTimer) return;
  setStatus("polling", "updating every 2 s");
  const poll = async () => {
    try {
      const res = await fetch(root.dataset.liveUrl, { cache: "no-store" });
      if (res.ok) {
        const message = await res.json();
        apply({ ...message.snapshot, rate: rateFromPolls(message.snapshot) });
      }
    } catch (err) {
      console.warn("live poll failed", err);
    }
  };
  poll();
  pollTimer = setInterval(poll, 2000);
}

let previousPoll = null;
function rateFromPolls(s) {
  const now = Date.now() / 1000;
  const finished = s.tasks_done + s.tasks_failed;
  const rate = previousPoll ? Math.max(0, (finished - previousPoll.finished) / (now - previousPoll.t)) : 0;
  previousPoll = { t: now, finished };
  s.t = now;
  return rate;
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
  previousPoll = null;
}

// --- workers and session metrics ------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderWorkers(data) {
  const body = document.getElementById("workers-body");
  const rows = data.campaign.sessions.filter((s) => s.connected);
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell("No worker is on this campaign right now.", "muted");
    td.colSpan = 7;
    tr.append(td);
    body.append(tr);
  }
  for (const s of rows) {
    const tr = document.createElement("tr");
    tr.append(
      cell(`${s.kind} #${s.id}`, "nowrap"),
      cell(s.who),
      cell(String(s.slots), "num hide-sm"),
      cell(String(s.in_flight), "num"),
      cell(`${s.recent_ok}${s.recent_failed ? ` (+${s.recent_failed} failed)` : ""}`, "num"),
      cell(s.recent_avg_ms != null ? `${formatNumber(s.recent_avg_ms)} ms` : "–", "num nowrap hide-sm"),
      cell(s.idle_share != null ? `${Math.round(s.idle_share * 100)}%` : "–", "num hide-sm"),
    );
    body.append(tr);
  }
  const metrics = {
    "campaign.value": data.campaign.value,
    "campaign.non_value": data.campaign.non_value,
    "pool.value": data.pool.value,
    "pool.non_value": data.pool.non_value,
    "pool.browser": data.pool.browser,
    "pool.native": data.pool.native,
    "pool.connected": data.pool.connected,
    "pool.downtime": formatDuration(data.pool.downtime_s),
    "pool.downtime_share": data.pool.downtime_share != null ? `${Math.round(data.pool.downtime_share * 100)}%` : "–",
  };
  for (const [key, value] of Object.entries(metrics)) {
    for (const el of root.querySelectorAll(`[data-metric="${key}"]`)) el.textContent = typeof value === "number" ? formatNumber(value) : value;
  }
}

async function refreshWorkers() {
  if (!document.hidden) {
    try {
      const res = await fetch(root.dataset.workersUrl, { cache: "no-store" });
      if (res.ok) renderWorkers(await res.json());
    } catch (err) {
      console.warn("worker refresh failed", err);
    }
  }
  const finished = ["completed", "cancelled", "failed"].includes(root.dataset.state);
  setTimeout(refreshWorkers, finished ? 15000 : 3000);
}

connect();
refreshWorkers();
window.ccgscCampaign = { get snapshot() { return lastSnapshot; } };
