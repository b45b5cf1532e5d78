// One hand: a dedicated module Worker that runs one task at a time. A hand owns its worker;
// a task past its wall-time limit, a cancelled task or a crashed worker ends with
// worker.terminate() and the next task gets a fresh worker. Hands share nothing, so one
// crashing does not disturb the others.

let nextRunId = 1;
const EMPTY = new Uint8Array();
// The stderr a result keeps (its end), as the WASI host and kernelhost keep it.
const STDERR_TAIL_BYTES = 4096;

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** A result the page makes up (the worker could not say): the message is the host's reason;
 * `extra` brings what the kernel had written and reported before (run.partial()). */
function ended(error, message, started, extra = {}) {
  return {
    exit_code: null,
    error,
    message,
    stdout: EMPTY,
    stderr: new TextEncoder().encode(message),
    checkpoint: null,
    progress: null,
    ms: Math.round(performance.now() - started),
    ...extra,
  };
}

export class Hand {
  /** urls: {wasm, js, gpu} of the worker scripts. */
  constructor(index, urls) {
    this.index = index;
    this.urls = urls;
    this.worker = null;
    this.kind = null;
    this.ready = null;
    this.current = null;
    this.knownStatic = null;
    /** @type {{worker: Worker, kind: string, ready: Promise<void>, knownStatic: string | null} | null} */
    this.parked = null; // an idle GPU worker set aside while the hand runs other kinds
  }

  _dropParked() {
    if (this.parked !== null) this.parked.worker.terminate();
    this.parked = null;
  }

  get busy() {
    return this.current !== null;
  }

  /**
   * Make `kind`'s worker the current one. A GPU worker is set aside rather than ended when the
   * hand turns to another kind, and taken back when GPU work returns: its device and compiled
   * pipelines are costly to make again, and campaigns of both kinds alternate on one hand.
   * Other workers are cheap to start and end.
   */
  _spawn(kind) {
    const parked = this.parked;
    if (parked !== null && parked.kind === kind) {
      this.parked = null;
      this._kill();
      this.worker = parked.worker;
      this.kind = parked.kind;
      this.ready = parked.ready;
      this.knownStatic = parked.knownStatic;
      return;
    }
    if (this.worker !== null && this.kind === "gpu") {
      this._dropParked();
      this.parked = { worker: this.worker, kind: this.kind, ready: this.ready, knownStatic: this.knownStatic };
      this.worker = null;
      this.kind = null;
      this.ready = null;
      this._readyResolve = this._readyReject = null;
    } else {
      this._kill();
    }
    const worker = new Worker(this.urls[kind], { type: "module", name: `ccgsc-hand-${this.index}` });
    this.worker = worker;
    this.kind = kind;
    this.knownStatic = null;
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    worker.onmessage = (event) => this._onMessage(worker, event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      this._crashed(worker, event.message || "the worker failed to start or crashed");
    };
    worker.onmessageerror = () => this._crashed(worker, "a message from the worker could not be read");
  }

  _kill() {
    if (this.worker !== null) {
      this.worker.terminate();
      if (this._readyReject) this._readyReject(new Error("worker terminated"));
    }
    this.worker = null;
    this.kind = null;
    this.ready = null;
    this._readyResolve = this._readyReject = null;
  }

  _onMessage(worker, msg) {
    if (worker !== this.worker || !msg) return;
    if (msg.t === "ready") {
      if (this._readyResolve) this._readyResolve();
      return;
    }
    const run = this.current;
    if (run === null || msg.id !== run.id) return;
    if (msg.t === "progress") {
      run.progress = msg.p;
      run.onProgress?.(msg.p);
    } else if (msg.t === "checkpoint") {
      run.checkpoint = msg.data;
      run.onCheckpoint?.(msg.data);
    } else if (msg.t === "out") {
      if (msg.stdout) run.wrote(1, msg.stdout);
      if (msg.stderr) run.wrote(2, msg.stderr);
    } else if (msg.t === "done") {
      this._finish(msg.result);
    }
  }

  _crashed(worker, message) {
    if (this.parked !== null && worker === this.parked.worker) this._dropParked();
    if (worker !== this.worker) return;
    const run = this.current;
    this._kill();
    if (run !== null) this._finish(ended("trap", `The kernel's worker crashed: ${message}`, run.started, run.partial()));
  }

  _finish(result) {
    const run = this.current;
    if (run === null) return;
    clearTimeout(run.timer);
    this.current = null;
    run.resolve(result);
  }

  /**
   * Run one task. job: {kind: "wasm"|"js"|"gpu", module, memory, url, gpu: {sha, source,
   * manifest}, task, limits, static: {sha, data} | null, onProgress, onCheckpoint}. Resolves with the host result
   * (see wasi_host.runKernel); never rejects.
   */
  async run(job) {
    if (this.current !== null) throw new Error("this hand is busy");
    const run = {
      id: nextRunId++,
      started: performance.now(),
      progress: null,
      checkpoint: null,
      timer: null,
      onProgress: job.onProgress,
      onCheckpoint: job.onCheckpoint,
      resolve: null,
      // What the kernel wrote so far (the worker's "out" messages): a run that is terminated
      // reports it, as wasmtime reports what was written before a timeout. stdout is capped
      // by the worker (a write past the output limit ends the run there); of stderr only the
      // tail is kept.
      stdout: [],
      stderr: [],
      stderrBytes: 0,
      wrote(fd, data) {
        if (fd === 1) {
          this.stdout.push(data);
          return;
        }
        this.stderr.push(data);
        this.stderrBytes += data.byteLength;
        while (this.stderr.length > 1 && this.stderrBytes - this.stderr[0].byteLength >= STDERR_TAIL_BYTES) {
          this.stderrBytes -= this.stderr.shift().byteLength;
        }
      },
      partial() {
        const stderr = concat(this.stderr);
        return {
          progress: this.progress,
          checkpoint: this.checkpoint,
          stdout: concat(this.stdout),
          stderr: stderr.slice(Math.max(0, stderr.length - STDERR_TAIL_BYTES)),
        };
      },
    };
    const done = new Promise((resolve) => {
      run.resolve = resolve;
    });
    this.current = run;
    if (this.worker === null || this.kind !== job.kind) this._spawn(job.kind);
    try {
      await this.ready;
    } catch {
      if (this.current === run) this._finish(ended("trap", "The kernel's worker did not start.", run.started));
      return done;
    }
    if (this.current !== run) return done; // aborted while the worker was starting
    const staticMsg = job.static ? { sha: job.static.sha } : null;
    if (job.static && this.knownStatic !== job.static.sha) {
      staticMsg.data = job.static.data;
      this.knownStatic = job.static.sha;
    }
    // The wall-time limit starts when the task is handed over, as in wasmtime (from
    // instantiation): worker start-up is not the kernel's time.
    run.started = performance.now();
    const limitMs = Math.max(1, job.limits.timeout_s * 1000);
    run.timer = setTimeout(() => {
      if (this.current !== run) return;
      this._kill();
      const seconds = job.limits.timeout_s;
      this._finish(ended("timeout", `The kernel ran longer than its time limit of ${seconds} s.`, run.started, run.partial()));
    }, limitMs);
    this.worker.postMessage({
      t: "run",
      id: run.id,
      module: job.module,
      memory: job.memory,
      url: job.url,
      gpu: job.gpu,
      task: job.task,
      limits: job.limits,
      static: staticMsg,
    });
    return done;
  }

  /** Stop the task in hand (if any): the worker is terminated; run() resolves "cancelled". */
  abort(reason = "cancelled") {
    const run = this.current;
    if (run === null) return;
    this._kill();
    this._finish(ended("cancelled", `The task was ${reason}.`, run.started, run.partial()));
  }

  dispose() {
    this.abort("stopped");
    this._kill();
    this._dropParked();
  }
}
