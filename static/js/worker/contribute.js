// The contribute page (templates/workers/contribute.html): settings, start/pause/resume/stop,
// and a live view of the harness. Kernels run in the harness's Web Workers, never here.

import { Harness, maxHands } from "./harness.js";

const config = JSON.parse(document.getElementById("ccgsc-config").textContent);
/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** A form control of the page (the settings). @param {string} id */
const field = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
/** @param {string} id */
const table = (id) => /** @type {HTMLTableElement} */ (document.getElementById(id));
const SETTINGS_KEY = "ccgsc:contribute:settings";
const cores = navigator.hardwareConcurrency || 1;

function loadSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
  } catch {
    return {};
  }
}

function saveSettings() {
  try {
    localStorage.setItem(
      SETTINGS_KEY,
      JSON.stringify({
        hands: Number(field("hands").value),
        throttle: Number(field("throttle").value),
        background: field("background").checked,
        battery: field("on-battery").checked,
        gpu: gpuChoice,
      }),
    );
  } catch {
    // storage blocked: settings last for this visit
  }
}

const saved = loadSettings();
// The volunteer's own GPU choice once they made one (undefined until then: see applyGpuDefault).
/** @type {boolean | undefined} */
let gpuChoice = typeof saved.gpu === "boolean" ? saved.gpu : undefined;
const params = new URLSearchParams(location.search);
// ?gpu=on / ?gpu=off (a GPU campaign's "Lend your GPU" link) decides for this visit only.
const gpuVisit = { on: true, off: false }[params.get("gpu") ?? ""];
field("hands").max = String(maxHands());
// From the address, the saved settings or the core count, within 1..maxHands().
const askedHands = Math.floor(Number(params.get("hands") || saved.hands)) || cores;
field("hands").value = String(Math.min(maxHands(), Math.max(1, askedHands)));
// A percentage from 10 to 100; anything else (a typo in the address) means full speed.
const askedThrottle = Number(params.get("throttle") || saved.throttle);
field("throttle").value = String(askedThrottle >= 10 && askedThrottle <= 100 ? askedThrottle : 100);
field("background").checked = params.has("background") || Boolean(saved.background);
field("on-battery").checked = Boolean(saved.battery);
$("cores-note").textContent = `This device reports ${cores} logical core${cores === 1 ? "" : "s"}.`;
$("throttle-out").textContent = `${field("throttle").value}%`;

// The view is redrawn at most a few times a second: with fast tasks the harness changes state
// hundreds of times a second, and the page's main thread is also the one feeding the hands.
const RENDER_EVERY_MS = 250;
let renderQueued = false;
let renderedAt = 0;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const wait = Math.max(0, RENDER_EVERY_MS - (performance.now() - renderedAt));
  setTimeout(() => {
    requestAnimationFrame(() => {
      renderQueued = false;
      renderedAt = performance.now();
      render(harness.snapshot());
    });
  }, wait);
}

const harness = new Harness({
  hands: Number(field("hands").value),
  throttle: Number(field("throttle").value),
  transport: config.transport,
  workerUrls: config.workerUrls,
  onUpdate: scheduleRender,
});
window.ccgscHarness = harness; // for the browser tests and the curious

// GPU work. The checkbox waits for the GPU worker's answer (gpu_probe.js): with no adapter it
// stays off and disabled, and the session never announces a GPU, so no GPU work comes here.
// The default, until the volunteer chooses (remembered like the other settings): on for a
// hardware adapter — they came here to lend this computer, and the GPU is where most of its
// compute is — and off for a software adapter (the browser emulating a GPU on the CPU, e.g.
// SwiftShader), which would only compete with the hands chosen above, more slowly.
const gpuReady = harness.probeGpu().then((info) => {
  const box = field("gpu");
  const note = $("gpu-note");
  if (info === null) {
    box.checked = false;
    box.disabled = true;
    note.textContent = "This browser offers no WebGPU adapter: GPU campaigns are not sent here.";
    note.dataset.state = "none";
  } else {
    box.disabled = false;
    box.checked = gpuVisit ?? gpuChoice ?? !harness.gpuSoftware;
    note.textContent = `Adapter: ${info.adapter}${harness.gpuSoftware ? ". It runs on your CPU, not on a graphics card." : ""}`;
    note.dataset.state = "found";
    note.dataset.adapter = info.adapter;
  }
  harness.setGpu(box.checked);
});

// --- controls --------------------------------------------------------------------------------

$("start").addEventListener("click", async () => {
  await gpuReady; // the hello says whether this browser takes GPU work
  applyVisibility();
  applyBattery();
  harness.start();
  scheduleRender();
});
$("pause").addEventListener("click", () => harness.pause("user"));
$("resume").addEventListener("click", () => harness.resume("user"));
$("stop").addEventListener("click", () => harness.stop());
field("hands").addEventListener("change", () => {
  harness.setHands(Number(field("hands").value));
  field("hands").value = String(harness.handCount); // what it runs: within 1..maxHands()
  saveSettings();
});
field("throttle").addEventListener("input", () => {
  $("throttle-out").textContent = `${field("throttle").value}%`;
  harness.setThrottle(Number(field("throttle").value));
});
field("throttle").addEventListener("change", saveSettings);
field("gpu").addEventListener("change", () => {
  gpuChoice = field("gpu").checked;
  harness.setGpu(gpuChoice);
  saveSettings();
});
field("background").addEventListener("change", () => {
  applyVisibility();
  saveSettings();
});
field("on-battery").addEventListener("change", () => {
  applyBattery();
  saveSettings();
});

function applyVisibility() {
  if (document.hidden && !field("background").checked) harness.pause("hidden");
  else harness.resume("hidden");
}
document.addEventListener("visibilitychange", applyVisibility);
// Leaving the page: hand the leases back and report the session's last metrics at once (the
// server would also release them when the socket closes).
window.addEventListener("pagehide", () => harness.stop());

// Pause on battery where the browser tells (the Battery Status API is Chromium-only).
let battery = null;
function applyBattery() {
  if (battery && !battery.charging && !field("on-battery").checked) harness.pause("battery");
  else harness.resume("battery");
}
if (navigator.getBattery) {
  navigator.getBattery().then((b) => {
    battery = b;
    b.addEventListener("chargingchange", applyBattery);
    applyBattery();
  }, () => {});
}

// --- live view -------------------------------------------------------------------------------

const STATE_LABELS = {
  stopped: ["Stopped", "badge-draft"],
  connecting: ["Connecting", "badge-info"],
  reconnecting: ["Reconnecting", "badge-warning"],
  working: ["Computing", "badge-running"],
  waiting: ["Waiting for work", "badge-info"],
  paused: ["Paused", "badge-paused"],
  error: ["Error", "badge-danger"],
};
const PAUSE_REASONS = { user: "by you", hidden: "while the tab is hidden", battery: "on battery" };

function seconds(ms) {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function bytes(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

const cards = new Map(); // campaign id -> card element
function campaignCard(id, descriptor) {
  let card = cards.get(id);
  if (card) return card;
  $("campaigns-empty")?.remove();
  card = document.createElement("article");
  card.className = "card";
  card.dataset.campaign = String(id);
  const title = document.createElement("h3");
  title.className = "card-title";
  title.textContent = descriptor.name || `Campaign ${id}`;
  const org = document.createElement("p");
  org.className = "muted small";
  const description = document.createElement("p");
  description.className = "campaign-description";
  const progress = document.createElement("div");
  progress.className = "progress";
  progress.hidden = true;
  const bar = document.createElement("div");
  bar.className = "progress-bar";
  progress.append(bar);
  const mine = document.createElement("p");
  mine.className = "muted small campaign-mine";
  card.append(title, org, description, progress, mine);
  $("campaigns").append(card);
  cards.set(id, card);
  // Public facts about the campaign (name, owner, description, progress); refreshed every few
  // seconds (one primary-key read) so its progress bar keeps up with the work seen here.
  const refresh = async () => {
    try {
      const response = await fetch(`/contribute/campaigns/${id}.json`, { credentials: "same-origin" });
      if (!response.ok) return;
      const info = await response.json();
      title.textContent = info.name;
      org.textContent = `by ${info.organization} · ${info.points_per_task} points per validated task`;
      description.textContent = info.description || "";
      if (info.tasks_total > 0) {
        progress.hidden = false;
        bar.style.width = `${Math.min(100, (100 * info.tasks_done) / info.tasks_total).toFixed(1)}%`;
        progress.title = `${info.tasks_done} of ${info.tasks_total} tasks done`;
      }
    } catch {
      // offline for a moment: the next refresh will do
    }
  };
  refresh();
  setInterval(refresh, 10000);
  return card;
}

function render(s) {
  const [label, badge] = STATE_LABELS[s.state] || [s.state, "badge-draft"];
  const state = $("state");
  state.textContent = label;
  state.className = `badge ${badge}`;
  state.dataset.state = s.state;
  let detail = s.detail || "";
  if (s.state === "paused") detail = `Paused ${s.pauseReasons.map((r) => PAUSE_REASONS[r] || r).join(", ")}.`;
  else if (s.transport === "http" && s.state !== "stopped") detail = detail || "Using the HTTP fallback (WebSocket unavailable).";
  $("detail").textContent = detail;

  const active = s.state !== "stopped" && s.state !== "error";
  const focused = document.activeElement;
  $("start").hidden = active;
  $("stop").hidden = !active;
  $("pause").hidden = !active || s.state === "paused";
  $("resume").hidden = !active || s.state !== "paused" || !s.pauseReasons.includes("user");
  // A button hidden while it has the focus hands it to the one replacing it (Start → Pause,
  // Pause ⇄ Resume, Stop → Start): keyboard users keep their place instead of starting over.
  if (focused instanceof HTMLElement && focused.hidden) {
    ["pause", "resume", "start", "stop"].map($).find((b) => !b.hidden)?.focus();
  }

  const running = s.hands.filter((h) => h.state === "running").length;
  $("stat-done").textContent = String(s.stats.done);
  $("stat-running").textContent = String(running);
  $("stat-queued").textContent = String(s.queued);
  $("stat-busy").textContent = seconds(s.stats.busyMs);
  // Both add up over hands (64 hands waiting 15 s is 16 min): the waiting is shown as a share.
  const handMs = s.stats.busyMs + s.stats.idleMs;
  $("stat-idle").textContent = handMs > 0 ? `${Math.round((100 * s.stats.idleMs) / handMs)}%` : "–";
  const minutes = s.stats.since ? (Date.now() - s.stats.since) / 60000 : 0;
  const perMinute = minutes > 0.05 ? s.stats.done / minutes : null;
  // Whole tasks per minute once there are ten or more: "1,180", not "1179.9".
  $("stat-rate").textContent =
    perMinute === null ? "–" : perMinute >= 10 ? Math.round(perMinute).toLocaleString("en") : perMinute.toFixed(1);
  document.body.dataset.done = String(s.stats.done);

  const handsBody = table("hands-table").tBodies[0];
  handsBody.replaceChildren();
  for (const hand of s.hands) {
    const row = handsBody.insertRow();
    row.dataset.state = hand.state;
    cell(row, String(hand.index + 1));
    cell(row, hand.state);
    cell(row, hand.task === null ? "–" : `#${hand.task}`, "mono");
    const td = row.insertCell();
    if (hand.state === "running") {
      const progress = document.createElement("div");
      progress.className = "progress";
      const bar = document.createElement("div");
      bar.className = "progress-bar";
      bar.style.width = `${Math.round((hand.progress ?? 0) * 100)}%`;
      progress.append(bar);
      td.append(progress);
    }
    cell(row, hand.state === "running" ? seconds(hand.runningMs) : "", "num");
  }

  for (const [id, descriptor] of Object.entries(s.campaigns)) {
    const card = campaignCard(Number(id), descriptor);
    const mine = s.stats.perCampaign[id];
    card.querySelector(".campaign-mine").textContent = mine
      ? `This browser: ${mine.done} task${mine.done === 1 ? "" : "s"} done${mine.failed ? `, ${mine.failed} failed` : ""}`
      : "";
  }

  const recentBody = table("recent-table").tBodies[0];
  if (s.recent.length) {
    recentBody.replaceChildren();
    for (const r of s.recent) {
      const row = recentBody.insertRow();
      cell(row, `#${r.task}`, "mono");
      const desc = s.campaigns[r.campaign];
      const name = desc?.name || String(r.campaign);
      // A GPU task is marked "(GPU)", unless its campaign's name already ends so.
      cell(row, desc?.kind === "gpu" && !name.endsWith("(GPU)") ? `${name} (GPU)` : name);
      const outcome = row.insertCell();
      const b = document.createElement("span");
      b.className = `badge ${r.ok ? "badge-success" : "badge-danger"}`;
      b.textContent = r.ok ? "done" : r.error === "exit" ? `exit ${r.exit ?? "?"}` : r.error;
      outcome.append(b);
      cell(row, `${r.ms} ms`, "num");
      cell(row, bytes(r.bytes), "num");
    }
  }
}

// Points are granted when results are validated (by quorum or verifier), so they follow the
// work with a delay: the page asks for the contributor's total now and then.
let pointsAtStart = null;
async function refreshPoints() {
  if (!config.signedIn) return;
  try {
    const response = await fetch("/contribute/points.json", { credentials: "same-origin" });
    if (!response.ok) return;
    const { points } = await response.json();
    if (points === null) return;
    if (pointsAtStart === null) pointsAtStart = points;
    const gained = points - pointsAtStart;
    // Grouped like the leaderboard and profile pages (en-US: 20,780).
    $("stat-points").textContent = points.toLocaleString("en-US");
    $("points-label").textContent = gained > 0 ? `points in total (+${gained.toLocaleString("en-US")} since you opened this page)` : "points in total (granted once results are validated)";
  } catch {
    // offline for a moment: the next refresh will do
  }
}
refreshPoints();
setInterval(refreshPoints, 15000);

render(harness.snapshot());
// Running hands' timers tick even without messages.
setInterval(() => {
  if (harness.running) render(harness.snapshot());
}, 1000);
