// Module Worker that runs WebAssembly kernels (one per hand). The page compiles each kernel
// once and posts the WebAssembly.Module; this worker only instantiates and runs it through the
// WASI host. A run is synchronous: to stop it (time limit, cancel) the page terminates the
// whole worker and starts a new one.
//
// Messages in:  {t: "run", id, module, memory: {min, max}, task, limits, static: {sha, data?}}
// Messages out: {t: "progress", id, p}, {t: "checkpoint", id, data},
//               {t: "out", id, stdout, stderr}, {t: "done", id, result}
// "out" carries what the kernel writes to stdout and stderr as it happens: a run the page
// terminates (time limit, cancel) has no "done", and the page still reports what the kernel
// wrote before, as wasmtime does. postMessage from a busy worker needs no turn of its event
// loop, so a write sent is never lost. Each write is sent at once, up to OUT_POSTS_PER_WINDOW
// messages per OUT_WINDOW_MS; past that (a kernel writing in a tight loop) writes are held and
// sent together with the next write after the window, so a flood cannot swamp the page with
// messages. Only a kernel that floods and then computes until its time limit without writing
// again loses the writes of that last window; stderr is sent as its last 4 KiB only (all the
// page keeps).

import { runKernel, STDERR_TAIL_BYTES } from "./wasi_host.js";

const OUT_WINDOW_MS = 10;
const OUT_POSTS_PER_WINDOW = 64;

function joined(chunks, keepTail = Infinity) {
  let size = chunks.reduce((n, c) => n + c.byteLength, 0);
  let skip = Math.max(0, size - keepTail);
  size -= skip;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    const part = skip >= c.byteLength ? null : c.subarray(skip);
    skip = Math.max(0, skip - c.byteLength);
    if (part) {
      out.set(part, at);
      at += part.byteLength;
    }
  }
  return out;
}

/** The "out" messages of one run: see the header. */
function outputSender(id) {
  let windowStart = -Infinity;
  let posts = 0;
  let stdout = [];
  let stderr = [];
  return (fd, data) => {
    (fd === 1 ? stdout : stderr).push(data);
    const now = performance.now();
    if (now - windowStart >= OUT_WINDOW_MS) {
      windowStart = now;
      posts = 0;
    }
    if (posts >= OUT_POSTS_PER_WINDOW) return;
    posts += 1;
    self.postMessage({
      t: "out",
      id,
      stdout: stdout.length ? joined(stdout) : null,
      stderr: stderr.length ? joined(stderr, STDERR_TAIL_BYTES) : null,
    });
    stdout = [];
    stderr = [];
  };
}

// Static data is sent once per worker and kept by hash (it may be large; tasks share it).
const statics = new Map();

self.onmessage = (event) => {
  const msg = event.data;
  if (!msg || msg.t !== "run") return;
  const { id } = msg;
  const task = { ...msg.task, static: null };
  if (msg.static) {
    if (msg.static.data) {
      statics.clear(); // one campaign's data at a time is what a hand needs
      statics.set(msg.static.sha, msg.static.data);
    }
    task.static = statics.get(msg.static.sha) ?? null;
  }
  const result = runKernel(
    msg.module,
    task,
    msg.limits,
    {
      progress: (p) => self.postMessage({ t: "progress", id, p }),
      checkpoint: (data) => self.postMessage({ t: "checkpoint", id, data }),
      output: outputSender(id),
    },
    msg.memory,
  );
  self.postMessage({ t: "done", id, result }, { transfer: [result.stdout.buffer, result.stderr.buffer] });
};

self.postMessage({ t: "ready" });
