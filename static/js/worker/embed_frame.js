// The embed iframe: asks the visitor for consent, remembers the answer (localStorage of the
// platform's origin, per embedding site), and only then starts the harness with the site's key
// so the work is attributed to the site. Nothing connects to the server before consent.

import { Harness } from "./harness.js";

const config = JSON.parse(document.getElementById("ccgsc-config").textContent);
const storageKey = `ccgsc:embed:consent:${config.site}`;
const $ = (id) => document.getElementById(id);
const cores = navigator.hardwareConcurrency || 1;
const hands = Math.max(1, Math.floor(cores / 2));
const THROTTLE = 50; // percent of each hand's time

let harness = null;

// Where the choice is kept. localStorage of the platform's origin where the browser allows it in
// a third-party frame (partitioned per embedding site); browsers that block third-party
// storage (Chromium with third-party cookies blocked) still keep partitioned cookies (CHIPS),
// so the choice is also written there, limited to the frame's path. Both are per embedding
// site, which is what a visitor's consent is about.
const cookieName = `ccgsc_consent_${config.site.replace(/[^A-Za-z0-9_-]/g, "")}`;

function remembered() {
  try {
    const stored = localStorage.getItem(storageKey);
    if (stored) return stored;
  } catch {
    // third-party storage blocked: try the cookie
  }
  const match = document.cookie.split("; ").find((c) => c.startsWith(`${cookieName}=`));
  return match ? match.slice(cookieName.length + 1) : null;
}

function remember(choice) {
  try {
    localStorage.setItem(storageKey, choice);
  } catch {
    // third-party storage blocked: the cookie below keeps it
  }
  const secure = location.protocol === "https:" || ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  const attributes = secure ? "; Secure; SameSite=None; Partitioned" : "; SameSite=Lax";
  document.cookie = `${cookieName}=${choice}; Path=/embed/; Max-Age=31536000${attributes}`;
}

const PANEL_WIDTH = 380; // the consent card's width where the host page leaves room for it
const MARGIN = 8; // body padding on both sides: room for the card's shadow, nothing more

/** Tell the embedding page how big the frame should be (it ignores other messages). The frame
 * is sized to the card so the host page keeps every click outside it. The embed script may
 * narrow the frame (small screens); the card then wraps taller, the observer below sees it and
 * the height is reported again. Nothing shown (dismissed for good) reports 0 × 0. */
function resize() {
  const shown = [$("consent"), $("badge"), $("off")].find((el) => !el.hidden);
  if (!shown) {
    parent.postMessage({ ccgsc: "size", width: 0, height: 0 }, "*");
    return;
  }
  const rect = shown.getBoundingClientRect();
  const width = shown.id === "consent" ? PANEL_WIDTH : Math.ceil(rect.width) + MARGIN;
  const height = Math.ceil(rect.height) + MARGIN;
  parent.postMessage({ ccgsc: "size", width, height }, "*");
}

const observer = new ResizeObserver(() => resize());
for (const id of ["consent", "badge", "off"]) observer.observe($(id));

/** @param {"consent" | "badge" | "off" | null} which the part to show (null: none) */
function show(which) {
  for (const id of ["consent", "badge", "off"]) $(id).hidden = id !== which;
  requestAnimationFrame(resize);
}

// Redrawn at most a few times a second (the harness changes state with every task).
let renderQueued = false;
function scheduleRender() {
  if (renderQueued || harness === null) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    if (harness !== null) render(harness.snapshot());
  }, 250);
}

function render(snapshot) {
  const paused = snapshot.state === "paused";
  const labels = {
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    working: "Computing",
    waiting: "Waiting for work",
    paused: "Paused",
    stopped: "Stopped",
    error: "Unavailable",
  };
  $("badge-state").textContent = labels[snapshot.state] || snapshot.state;
  $("badge-done").textContent = String(snapshot.stats.done);
  $("badge-unit").textContent = snapshot.stats.done === 1 ? "task" : "tasks";
  $("badge-dot").classList.toggle("paused", paused || snapshot.state === "error");
  $("pause").hidden = paused;
  $("resume").hidden = !paused;
  document.body.dataset.state = snapshot.state;
  document.body.dataset.done = String(snapshot.stats.done);
  requestAnimationFrame(resize);
}

function start() {
  show("badge");
  if (harness === null) {
    harness = new Harness({
      hands,
      throttle: THROTTLE,
      site: config.site,
      transport: config.transport,
      workerUrls: config.workerUrls,
      // Only where the site owner opted in; without a WebGPU adapter nothing is announced.
      gpu: Boolean(config.gpu),
      onUpdate: scheduleRender,
    });
    window.ccgscHarness = harness;
  }
  if (document.hidden) harness.pause("hidden");
  harness.start();
  render(harness.snapshot());
}

function stop() {
  if (harness !== null) {
    harness.stop();
    harness = null;
  }
  show("off");
}

$("consent-cpu").textContent =
  `${hands === 1 ? "one" : hands} of your ${cores} processor cores about ${THROTTLE}% of the time` +
  (config.gpu ? ", and your graphics processor where the browser offers it (WebGPU)" : "");
$("opt-in").addEventListener("click", () => {
  remember("yes");
  start();
});
$("opt-out").addEventListener("click", () => {
  remember("no");
  show("off");
});
$("pause").addEventListener("click", () => harness && harness.pause("user"));
$("resume").addEventListener("click", () => harness && harness.resume("user"));
$("stop").addEventListener("click", () => {
  remember("no");
  stop();
});
$("change").addEventListener("click", () => show("consent"));
// The visitor said no and wants the pill gone too: nothing shows on this site from now on (the
// contribute page on the platform stays the way back).
$("dismiss").addEventListener("click", () => {
  remember("hidden");
  show(null);
});
// A background tab takes no new work (queued tasks go back to the server).
document.addEventListener("visibilitychange", () => {
  if (!harness) return;
  if (document.hidden) harness.pause("hidden");
  else harness.resume("hidden");
});
// Leaving the page hands the leases back at once; coming back to it from the back-forward cache
// starts again if the visitor had opted in.
window.addEventListener("pagehide", () => {
  if (harness !== null) {
    harness.stop();
    harness = null;
  }
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted && harness === null && remembered() === "yes") start();
});

const choice = remembered();
if (choice === "yes") start();
else if (choice === "no") show("off");
else if (choice === "hidden") show(null);
else show("consent");
