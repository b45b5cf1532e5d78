// Module Worker that runs WebAssembly kernels (one per hand). The page compiles each kernel
// once and posts the WebAssembly.Module; this worker only instantiates and runs it through the
// WASI host. A run is synchronous: to stop it (time limit, cancel) the page terminates the
// whole worker and starts a new one.
//
// Messages in:  {t: "run", id, module, memory: {min, max}, task, limits, static: {sha, data?}}
// Messages out: {t: "progress", id, p}, {t: "checkpoint", id, data}, {t: "out", id, fd, data},
//               {t: "done", id, result}
// "out" carries every write to stdout (fd 1) or stderr (fd 2) as it happens: a run the page
// terminates (time limit, cancel) has no "done", and the page still reports what the kernel
// wrote before, as wasmtime does. postMessage from a busy worker needs no turn of its event
// loop, so nothing written is lost.

import { runKernel } from "./wasi_host.js";

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
      output: (fd, data) => self.postMessage({ t: "out", id, fd, data }),
    },
    msg.memory,
  );
  self.postMessage({ t: "done", id, result }, [result.stdout.buffer, result.stderr.buffer]);
};

self.postMessage({ t: "ready" });
