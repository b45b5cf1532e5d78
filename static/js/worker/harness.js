// The browser worker: speaks the protocol (protocol.js), keeps a queue of leased tasks, runs
// them on its hands (hand.js, one Worker each), reports results, honours the CPU throttle
// (throttle.js) and pause/resume, and measures the session (busy time, idle "downtime").
//
// Everything is driven by events: server messages, worker messages and one timer per resting
// hand. Nothing polls. UI code subscribes with onUpdate(snapshot) and calls start(), pause(),
// resume(), stop(), setHands(), setThrottle().

import { reconnectDelay } from "./backoff.js";
import { Connection, VERSION } from "./protocol.js";
import { offeredMemory, probeGpu } from "./gpu_probe.js";
import { Hand } from "./hand.js";
import { gpuKernelSource, jsKernelUrl, staticData, wasmKernel } from "./kernels.js";
import { restMs, toDuty } from "./throttle.js";

const METRICS_EVERY_MS = 10000;
// While nothing has run since the last report an idle tab reports its idle time this rarely:
// it stays silent, so the server keeps its socket alive with its own pings (limits.beat),
// which cost the server far less than a message through its handler every 10 s from every
// idle tab (docs/protocol.md, Heartbeat).
const IDLE_METRICS_EVERY_MS = 30 * 60 * 1000;
// How often a session that the server pings looks whether the server has been silent its
// heartbeat (a ping of ours is due then): a look, not a message.
const SILENCE_CHECK_MS = 1000;
const PROGRESS_EVERY_MS = 2000;
const RECENT = 25;
const STDERR_TAIL = 4096;
const RESULT_ACK_TIMEOUT_MS = 10000;
// While every hand has another task queued, a result may wait this long for others to share
// its frame: the server's cost is mostly per frame, and it keeps about 500 ms of work per hand
// here, so no hand waits for it (the native worker does the same).
const RESULT_LINGER_MS = 250;
// Tasks asked for at a time: the server bounds what it sends by its own prefetch target (about
// half a second of work ahead per hand, learned from this session's speed).
const WANT = 256;

/**
 * The most hands a page may run: one per logical core the browser reports. More hands than
 * cores run no faster, and each is a Worker with its own kernel memory: hundreds of them
 * exhaust the tab (kernels trap allocating memory, and the page stops responding).
 */
export function maxHands() {
  return Math.max(1, Math.floor(navigator.hardwareConcurrency || 1));
}

function clampHands(n) {
  return Math.max(1, Math.min(maxHands(), Math.floor(Number(n)) || 1));
}

/**
 * Where in the queue the next task for a free hand is: the first task, except that GPU tasks
 * run one at a time (one device: the GPU serves one dispatch at a time anyway, and the native
 * worker does the same), so while one runs, the first CPU task; -1 when there is none.
 * @template T
 * @param {T[]} queue
 * @param {boolean} gpuBusy a GPU task is running
 * @param {(item: T) => boolean} isGpu
 */
export function nextRunnable(queue, gpuBusy, isGpu) {
  if (queue.length === 0) return -1;
  return gpuBusy ? queue.findIndex((item) => !isGpu(item)) : 0;
}

export class Harness {
  /**
   * options: {base (platform origin), hands, throttle (percent or fraction), site (embed key),
   * transport ("auto" | "websocket" | "http"), workerUrls: {wasm, js, gpu}, gpu (run GPU
   * kernels where WebGPU offers an adapter; default false), onUpdate(snapshot)}
   */
  constructor(options = {}) {
    this.base = options.base || location.origin;
    this.site = options.site || null;
    this.transport = options.transport || "auto";
    this.workerUrls = options.workerUrls || { wasm: "/worker/wasm.js", js: "/worker/js.js", gpu: "/worker/gpu.js" };
    this.gpuEnabled = Boolean(options.gpu);
    /** @type {import("./gpu_manifest.js").GpuInfo | null | undefined} undefined: not asked yet */
    this.gpuInfo = undefined;
    this.gpuSoftware = false; // the adapter is the browser's software fallback (the CPU)
    this._gpuProbe = null;
    this.onUpdate = options.onUpdate || (() => {});
    this.duty = toDuty(options.throttle ?? 1);
    this.handCount = clampHands(options.hands || maxHands());
    this.hands = [];
    this.slots = [];
    this.queue = [];
    this.campaigns = new Map();
    this.connection = null;
    this.session = null;
    this.limits = null;
    this.state = "stopped";
    this.detail = "";
    this.gpuAnnounced = false; // this session's hello carried `gpu`
    this.pauseReasons = new Set();
    this.running = false; // start() called and not stopped
    this.reconnects = 0;
    // WebSockets that open and then die before the welcome (proxies that accept the upgrade
    // but drop the connection): after a couple of those, use the HTTP fallback.
    this.socketFailures = 0;
    this.pendingResults = [];
    // One result frame in flight at a time: results that finish meanwhile leave together when
    // it is acknowledged, so a fast hand costs the server one transaction per batch, not per task.
    this.resultsInFlight = null; // when the frame in flight was sent (performance.now())
    this._resultTimer = null;
    this._lingerTimer = null;
    this._flushQueued = false;
    this.pendingProgress = new Map();
    this.stats = { done: 0, failed: 0, busyMs: 0, idleMs: 0, restMs: 0, badFrames: 0, since: null, perCampaign: {} };
    this.reported = { busyMs: 0, idleMs: 0, at: 0 };
    this.recent = [];
    this._timers = new Set();
    this._heartbeat = null;
    this.lastHeard = 0; // performance.now() of the server's last message
    this.pingedAt = 0; // and of our last ping
    this._updateQueued = false;
  }

  // --- public API -------------------------------------------------------------------------

  get paused() {
    return this.pauseReasons.size > 0;
  }

  snapshot() {
    const now = performance.now();
    return {
      state: this.paused && this.running ? "paused" : this.state,
      detail: this.detail,
      pauseReasons: [...this.pauseReasons],
      transport: this.connection ? this.connection.transportName : null,
      session: this.session,
      duty: this.duty,
      gpu: { enabled: this.gpuEnabled, info: this.gpuInfo ?? null, software: this.gpuSoftware, announced: this.gpuAnnounced },
      queued: this.queue.length,
      hands: this.slots.map((s, i) => ({
        index: i,
        state: s.state,
        lease: s.item ? s.item.lease : null,
        task: s.item ? s.item.task : null,
        campaign: s.item ? s.item.c : null,
        progress: s.progress,
        runningMs: s.state === "running" ? now - s.since : 0,
      })),
      stats: { ...this.stats, perCampaign: { ...this.stats.perCampaign }, idleMs: this.stats.idleMs + this._openIdle(now) },
      campaigns: Object.fromEntries(this.campaigns),
      recent: this.recent.slice(),
    };
  }

  async start() {
    if (this.running) return;
    this.running = true;
    this.stats.since = this.stats.since ?? Date.now();
    this._ensureHands();
    this._every(METRICS_EVERY_MS, () => this._sendMetrics());
    this._every(PROGRESS_EVERY_MS, () => this._sendProgress());
    await this._connect();
  }

  /** Pause for a reason ("user", "hidden", "battery"): queued tasks go back to the server at
   * once; tasks already running finish and are reported. */
  pause(reason = "user") {
    const was = this.paused;
    this.pauseReasons.add(reason);
    if (!was) {
      this._closeIdle();
      const leases = this.queue.map((item) => item.lease);
      this.queue = [];
      if (this.session !== null) this._send({ t: "release", leases });
    }
    this._update();
  }

  resume(reason = "user") {
    if (!this.pauseReasons.delete(reason) || this.paused) {
      this._update();
      return;
    }
    this._markIdleHands();
    this._askForWork();
    this._pump();
    this._update();
  }

  /** Stop working: running tasks are abandoned, every lease goes back, the session ends. */
  stop() {
    if (!this.running) return;
    this.running = false;
    this._closeIdle();
    for (const timer of this._timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    this._timers.clear();
    this._heartbeat = null;
    clearTimeout(this._resultTimer);
    this._resultTimer = null;
    const leases = [...this.queue.map((i) => i.lease), ...this.slots.filter((s) => s.item).map((s) => s.item.lease)];
    this.queue = [];
    for (const hand of this.hands) hand.dispose();
    this.hands = [];
    this.slots = [];
    if (this.session !== null) {
      this._flushResults({ force: true });
      this._sendMetrics(true); // the last report, whatever changed
      if (leases.length) this._send({ t: "release", leases });
      this._send({ t: "bye" });
    }
    const connection = this.connection;
    this.connection = null;
    this.session = null;
    // Give the last frames a moment to leave before closing the socket.
    setTimeout(() => connection && connection.close(), 200);
    this._setState("stopped", "");
  }

  /**
   * The GPU worker's adapter (asked once per page; null: no WebGPU adapter here).
   * @returns {Promise<import("./gpu_manifest.js").GpuInfo | null>}
   */
  probeGpu() {
    if (this._gpuProbe === null) {
      const asked = this.workerUrls.gpu ? probeGpu(this.workerUrls.gpu) : Promise.resolve({ info: null, software: false });
      this._gpuProbe = asked.then(({ info, software }) => {
        this.gpuInfo = info;
        this.gpuSoftware = software;
        this._update();
        return info;
      });
    }
    return this._gpuProbe;
  }

  /** Turn GPU work on or off. The server learns a session's GPU from its hello, so a running
   * harness starts a new session (its leases go back to the server, as with stop()). */
  setGpu(enabled) {
    const value = Boolean(enabled);
    if (value === this.gpuEnabled) return;
    this.gpuEnabled = value;
    if (this.running && (value ? this.gpuInfo !== null : this.gpuAnnounced)) {
      this.stop();
      this.start();
    }
    this._update();
  }

  setThrottle(value) {
    this.duty = toDuty(value);
    this._update();
  }

  setHands(n) {
    this.handCount = clampHands(n);
    if (this.running) this._ensureHands();
    this._update();
  }

  // --- hands --------------------------------------------------------------------------------

  _ensureHands() {
    while (this.hands.length < this.handCount) {
      this.hands.push(new Hand(this.hands.length, this.workerUrls));
      this.slots.push({ state: "idle", item: null, since: performance.now(), progress: null, retire: false, idleSince: null });
    }
    // Extra hands retire once their current task is done.
    this.slots.forEach((slot, i) => (slot.retire = i >= this.handCount));
    this._retire();
    this._markIdleHands();
    this._pump();
  }

  _retire() {
    while (this.slots.length > this.handCount) {
      const last = this.slots[this.slots.length - 1];
      if (last.state !== "idle") break;
      this._closeIdleOf(last, performance.now());
      this.hands.pop().dispose();
      this.slots.pop();
    }
  }

  _openIdle(now) {
    return this.slots.reduce((sum, s) => sum + (s.idleSince !== null ? now - s.idleSince : 0), 0);
  }

  _closeIdleOf(slot, now) {
    if (slot.idleSince !== null) {
      this.stats.idleMs += now - slot.idleSince;
      slot.idleSince = null;
    }
  }

  _closeIdle() {
    const now = performance.now();
    for (const slot of this.slots) this._closeIdleOf(slot, now);
  }

  /** Panther's downtime: a hand free to work, not paused, with no task to run. */
  _markIdleHands() {
    if (!this.running || this.paused || this.session === null) return;
    const now = performance.now();
    for (const slot of this.slots) {
      if (slot.state === "idle" && slot.idleSince === null && !slot.retire) slot.idleSince = now;
    }
  }

  _pump() {
    if (!this.running || this.paused) return;
    for (let i = 0; i < this.slots.length && this.queue.length > 0; i++) {
      const slot = this.slots[i];
      if (slot.state !== "idle" || slot.retire) continue;
      const isGpu = (item) => this.campaigns.get(item.c)?.kind === "gpu";
      const gpuBusy = this.slots.some((s) => s.state === "running" && s.item !== null && isGpu(s.item));
      const at = nextRunnable(this.queue, gpuBusy, isGpu);
      if (at < 0) break;
      this._run(i, this.queue.splice(at, 1)[0]);
    }
    this._retire();
  }

  async _run(index, item) {
    const slot = this.slots[index];
    const hand = this.hands[index];
    const session = this.session;
    this._closeIdleOf(slot, performance.now());
    slot.state = "running";
    slot.item = item;
    slot.since = performance.now();
    slot.progress = null;
    this._update();
    const desc = this.campaigns.get(item.c);
    let result;
    try {
      if (!desc) throw new Error(`no descriptor for campaign ${item.c}`);
      result = await hand.run(await this._job(desc, item, slot));
    } catch (exc) {
      result = {
        exit_code: null,
        error: "host",
        message: `The browser could not run the task: ${exc && exc.message ? exc.message : exc}`,
        stdout: new Uint8Array(),
        stderr: new TextEncoder().encode(String(exc && exc.message ? exc.message : exc)),
        ms: 0,
      };
    }
    if (this.slots[index] !== slot) return; // stopped meanwhile
    slot.item = null;
    slot.progress = null;
    if (result.error !== "cancelled" && session === this.session && session !== null) {
      this._report(item, result);
    }
    const rest = result.error === "cancelled" ? 0 : restMs(result.ms, this.duty);
    if (rest > 0) {
      slot.state = "resting";
      this.stats.restMs += rest;
      const timer = setTimeout(() => {
        this._timers.delete(timer);
        if (this.slots[index] !== slot) return;
        slot.state = "idle";
        this._afterHandFree(slot);
      }, rest);
      this._timers.add(timer);
    } else {
      slot.state = "idle";
      this._afterHandFree(slot);
    }
    this._update();
  }

  _afterHandFree(slot) {
    if (slot.retire) {
      this._retire();
    } else if (this.queue.length === 0) {
      this._markIdleHands();
      this._askForWork();
    }
    this._pump();
    this._update();
  }

  async _job(desc, item, slot) {
    const limits = {
      timeout_s: desc.timeout || 60,
      memory_bytes: desc.memory || 256 * 1024 * 1024,
      output_bytes: this.limits ? this.limits.max_output : 4 * 1024 * 1024,
      checkpoint_bytes: this.limits ? this.limits.max_checkpoint : 4 * 1024 * 1024,
      stderr_bytes: 1024 * 1024,
    };
    const job = {
      kind: desc.kind === "js" ? "js" : "wasm",
      limits,
      task: {
        stdin: item.in instanceof Uint8Array ? item.in : new TextEncoder().encode(String(item.in ?? "")),
        args: [...(desc.args || []), ...(item.args || [])],
        env: { ...(desc.env || {}), ...(item.env || {}) },
        checkpoint: item.ckpt ?? null,
      },
      static: desc.static ? { sha: desc.static, data: await staticData(this.base, desc.static) } : null,
      onProgress: (p) => {
        slot.progress = p;
        this.pendingProgress.set(item.lease, p);
        this._update();
      },
      onCheckpoint: (data) => this._send({ t: "checkpoint", lease: item.lease, data }),
    };
    if (desc.kind === "gpu") {
      if (!this.gpuAnnounced) throw new Error("GPU work was not asked for in this session");
      job.kind = "gpu";
      job.gpu = { sha: desc.kernel, source: await gpuKernelSource(this.base, desc.kernel), manifest: desc.gpu || {} };
    } else if (job.kind === "wasm") {
      const { module, memory } = await wasmKernel(this.base, desc.kernel);
      job.module = module;
      job.memory = memory;
    } else {
      job.url = await jsKernelUrl(this.base, desc.kernel);
    }
    return job;
  }

  _report(item, result) {
    const ok = result.error === null;
    let stderr = result.stderr || new Uint8Array();
    if (!ok && result.message) {
      // As the native worker reports a failure: the kernel's stderr, then the host's reason.
      const reason = new TextEncoder().encode(result.message);
      const sep = stderr.length && stderr[stderr.length - 1] !== 10 ? 1 : 0;
      const joined = new Uint8Array(stderr.length + sep + reason.length);
      joined.set(stderr, 0);
      if (sep) joined[stderr.length] = 10;
      joined.set(reason, stderr.length + sep);
      stderr = joined;
    }
    this.pendingResults.push({
      lease: item.lease,
      ok,
      output: ok ? result.stdout : result.stdout || new Uint8Array(),
      exit: result.exit_code,
      err: ok ? null : result.error,
      stderr: stderr.length > STDERR_TAIL ? stderr.slice(stderr.length - STDERR_TAIL) : stderr,
      ms: Math.max(0, Math.round(result.ms || 0)),
    });
    this.pendingProgress.delete(item.lease);
    this.stats.busyMs += result.ms || 0;
    if (ok) this.stats.done += 1;
    else this.stats.failed += 1;
    const mine = (this.stats.perCampaign[item.c] ??= { done: 0, failed: 0 });
    mine[ok ? "done" : "failed"] += 1;
    this.recent.unshift({
      lease: item.lease,
      task: item.task,
      campaign: item.c,
      ok,
      error: result.error,
      exit: result.exit_code,
      ms: Math.round(result.ms || 0),
      bytes: result.stdout ? result.stdout.length : 0,
      at: Date.now(),
    });
    this.recent.length = Math.min(this.recent.length, RECENT);
    this._scheduleResults();
  }

  /**
   * Send the pending results now, or, while every hand has another task queued and the page
   * is visible, within RESULT_LINGER_MS (a hidden page's timers are throttled: it sends at
   * once, and so does anyone once the queue runs short).
   */
  _scheduleResults() {
    const visible = typeof document !== "undefined" && document.visibilityState === "visible";
    if (visible && this.queue.length >= this.handCount) {
      if (!this._lingerTimer && !this._flushQueued) {
        this._lingerTimer = setTimeout(() => {
          this._lingerTimer = null;
          this._flushResults();
        }, RESULT_LINGER_MS);
      }
      return;
    }
    if (this._lingerTimer) {
      clearTimeout(this._lingerTimer);
      this._lingerTimer = null;
    }
    if (!this._flushQueued) {
      this._flushQueued = true;
      queueMicrotask(() => {
        this._flushQueued = false;
        this._flushResults();
      });
    }
  }

  _flushResults({ force = false } = {}) {
    if (force && this._lingerTimer) {
      clearTimeout(this._lingerTimer);
      this._lingerTimer = null;
    }
    if (this.pendingResults.length === 0) return;
    const now = performance.now();
    // A frame unanswered for long (lost with a reconnect, refused whole) does not hold back
    // the next one forever.
    const waited = this.resultsInFlight === null ? Infinity : now - this.resultsInFlight;
    if (waited < RESULT_ACK_TIMEOUT_MS && !force) {
      if (!this._resultTimer) {
        this._resultTimer = setTimeout(() => {
          this._resultTimer = null;
          this._flushResults();
        }, RESULT_ACK_TIMEOUT_MS - waited);
      }
      return;
    }
    const results = this.pendingResults.splice(0, 256);
    const msg = { t: "result", results };
    const want = this._wantCount();
    if (want > 0) msg.want = want;
    this.resultsInFlight = now;
    this._send(msg);
    if (force && this.pendingResults.length) this._flushResults({ force });
  }

  _resultsAcknowledged() {
    this.resultsInFlight = null;
    // Results lingering for company keep waiting; others leave now.
    if (!this._lingerTimer) this._flushResults();
  }

  // --- protocol -----------------------------------------------------------------------------

  _wantCount() {
    if (!this.running || this.paused || this.session === null) return 0;
    return WANT;
  }

  /**
   * For the HTTP fallback's long poll: tasks wanted now. Only while fewer tasks than hands are
   * in hand: the server then always has room to lease at once, and it holds the request only
   * when it has no work (a request rebuilds the session's state when it starts, so a poll sent
   * with a full hand would wait out its 10 s even after results freed the hand).
   */
  _hungry() {
    const held = this.queue.length + this.slots.filter((s) => s.state === "running").length;
    return held < this.handCount ? this._wantCount() : 0;
  }

  _askForWork() {
    const n = this._wantCount();
    // A result frame in flight carries a want already.
    if (n > 0 && this.resultsInFlight === null) this._send({ t: "want", n });
  }

  _send(message) {
    if (this.connection) this.connection.send(message);
  }

  async _connect() {
    const connection = new Connection({
      base: this.base,
      transport: this.transport === "auto" && this.socketFailures >= 2 ? "http" : this.transport,
      hungry: () => this._hungry(),
      onMessage: (msg) => {
        if (this.connection === connection) this._onMessage(msg);
      },
      onState: (state, detail) => {
        if (this.connection !== connection) return;
        if (state === "closed") this._lost(detail);
      },
      onBadFrame: (detail) => {
        // Counted and shown: a proxy mangling frames should be visible, not a silent stall.
        this.stats.badFrames += 1;
        this.detail = `ignored ${detail}`;
        console.warn(`ccgsc worker: ignored ${detail}`);
        this._update();
      },
    });
    this.connection = connection;
    this._setState("connecting", "");
    // Asked before connecting (once per page): a session announces its GPU in its hello only.
    const gpu = this.gpuEnabled ? await this.probeGpu() : null;
    if (this.connection !== connection) return;
    if (!(await connection.open())) return;
    if (this.connection !== connection) return;
    /** @type {Record<string, any>} */
    // pongs: we answer the server's ping, so it keeps an idle socket alive itself (limits.beat).
    const hello = { t: "hello", v: VERSION, kind: "browser", slots: this.handCount, agent: navigator.userAgent.slice(0, 200), js: true, pongs: true };
    if (this.site) hello.site = this.site;
    this.gpuAnnounced = gpu !== null;
    if (gpu !== null) hello.gpu = gpu;
    const memory = offeredMemory(/** @type {any} */ (navigator).deviceMemory);
    if (memory !== null) hello.memory = memory;
    connection.send(hello);
  }

  _lost(detail) {
    // Leases die with the session on the server: forget them, and try again later.
    if (this.session === null && this.connection && this.connection.opened === "websocket") {
      this.socketFailures += 1;
    }
    this._closeIdle();
    this._stopHeartbeat(); // the next session's welcome starts its own
    this.connection = null;
    this.session = null;
    this.queue = [];
    this.pendingResults = [];
    this.resultsInFlight = null;
    for (const hand of this.hands) hand.abort("lost with the connection");
    if (!this.running) return;
    // Jittered: the tabs a dead server process served do not all return at once.
    const delay = reconnectDelay(this.reconnects++);
    this._setState("reconnecting", detail);
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      if (this.running && this.connection === null) this._connect();
    }, delay);
    this._timers.add(timer);
  }

  _onMessage(msg) {
    this.lastHeard = performance.now();
    switch (msg.t) {
      case "welcome":
        this.session = msg.session;
        this.limits = msg.limits || null;
        this.reported.at = performance.now();
        this.reconnects = 0;
        this._setState("working", "");
        this._stopHeartbeat();
        if (this.limits && this.limits.heartbeat && this.connection.transportName === "websocket") {
          const every = this.limits.heartbeat * 1000;
          if (this.limits.beat) {
            // The server pings this socket when we are silent (answered below): a ping of ours
            // is needed only when the server has been silent `heartbeat` (we kept talking and
            // nothing came back), once per silence; an idle tab never sends one.
            this.pingedAt = 0;
            this._heartbeat = this._every(SILENCE_CHECK_MS, () => {
              const now = performance.now();
              if (now - this.lastHeard >= every && this.pingedAt < this.lastHeard) {
                this.pingedAt = now;
                this._send({ t: "ping" });
              }
            });
          } else {
            this._heartbeat = this._every(every, () => this._send({ t: "ping" }));
          }
        }
        this._markIdleHands();
        this._askForWork();
        break;
      case "tasks":
        for (const [id, desc] of Object.entries(msg.campaigns || {})) this.campaigns.set(Number(id), desc);
        if (this.paused) {
          // Arrived after we paused: hand them straight back.
          this._send({ t: "release", leases: msg.tasks.map((t) => t.lease) });
          break;
        }
        this.queue.push(...msg.tasks);
        this._setState("working", "");
        this._pump();
        break;
      case "idle":
        if (this.queue.length === 0 && !this.slots.some((s) => s.state === "running")) {
          this._setState("waiting", "no work right now; the server will send some when there is");
        }
        break;
      case "cancel": {
        const gone = new Set(msg.leases || []);
        this.queue = this.queue.filter((item) => !gone.has(item.lease));
        this.slots.forEach((slot, i) => {
          if (slot.item && gone.has(slot.item.lease)) this.hands[i].abort("withdrawn by the server");
        });
        break;
      }
      case "ack":
        if (Array.isArray(msg.leases)) this._resultsAcknowledged();
        break;
      case "ping":
        this._send({ t: "pong" }); // the server's, to a silent socket: we are here
        break;
      case "error":
        if (this.resultsInFlight !== null) this._resultsAcknowledged();
        this.detail = `${msg.code}: ${msg.message}`;
        if (msg.fatal) {
          this.stop();
          this._setState("error", `${msg.code}: ${msg.message}`);
        }
        break;
      default:
        break;
    }
    this._update();
  }

  _stopHeartbeat() {
    if (this._heartbeat) {
      clearInterval(this._heartbeat);
      this._timers.delete(this._heartbeat);
      this._heartbeat = null;
    }
  }

  /** @param {boolean} [always] report even when nothing ran since the last report */
  _sendMetrics(always = false) {
    if (this.session === null) return;
    const now = performance.now();
    const idle = this.stats.idleMs + this._openIdle(now);
    const busy = this.stats.busyMs;
    const quiet = busy === this.reported.busyMs && now - this.reported.at < IDLE_METRICS_EVERY_MS;
    if (quiet && !always) return;
    const msg = {
      t: "metrics",
      busy_ms: Math.max(0, Math.round(busy - this.reported.busyMs)),
      idle_ms: Math.max(0, Math.round(idle - this.reported.idleMs)),
    };
    this.reported = { busyMs: busy, idleMs: idle, at: now };
    this._send(msg);
  }

  _sendProgress() {
    if (this.session === null || this.pendingProgress.size === 0) return;
    const p = new Map(this.pendingProgress);
    this.pendingProgress.clear();
    this._send({ t: "progress", p });
  }

  _every(ms, fn) {
    const timer = setInterval(fn, ms);
    this._timers.add(timer);
    return timer;
  }

  _setState(state, detail) {
    this.state = state;
    this.detail = detail;
    this._update();
  }

  _update() {
    if (this._updateQueued) return;
    this._updateQueued = true;
    queueMicrotask(() => {
      this._updateQueued = false;
      this.onUpdate(this.snapshot());
    });
  }
}
