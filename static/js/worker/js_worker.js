// Module Worker that runs JavaScript kernels: ES modules exporting
//
//     export async function run(input, context) { ... return output; }
//
// input is a Uint8Array (the task input); output a Uint8Array, ArrayBuffer or string (UTF-8).
// context: {args, env, static (Uint8Array|null), checkpoint (Uint8Array|null),
//           progress(fraction), saveCheckpoint(bytes|string) -> 0 | -1}.
//
// The script that starts this worker is served with a Content-Security-Policy that forbids
// every connection (connect-src 'none') and loading scripts from anywhere but the platform
// (workers/browser.py), so a kernel cannot reach the network. Time limits are enforced by the
// page, which terminates the worker.

const encoder = new TextEncoder();
const statics = new Map();

function toBytes(value) {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value === undefined || value === null) return new Uint8Array();
  return null;
}

function failure(error, message, started) {
  return {
    exit_code: null,
    error,
    message,
    stdout: new Uint8Array(),
    stderr: encoder.encode(message).slice(-4096),
    checkpoint: null,
    progress: null,
    ms: Math.round(performance.now() - started),
  };
}

self.onmessage = async (event) => {
  const msg = event.data;
  if (!msg || msg.t !== "run") return;
  const { id, task, limits } = msg;
  if (msg.static && msg.static.data) {
    statics.clear();
    statics.set(msg.static.sha, msg.static.data);
  }
  const started = performance.now();
  let lastProgress = null;
  let progressAt = -Infinity;
  let saved = null;
  const context = Object.freeze({
    args: Object.freeze([...(task.args ?? [])]),
    env: Object.freeze({ ...(task.env ?? {}) }),
    static: msg.static ? (statics.get(msg.static.sha) ?? null) : null,
    checkpoint: task.checkpoint ?? null,
    progress(fraction) {
      const value = Number(fraction);
      if (Number.isNaN(value)) return;
      lastProgress = Math.min(1, Math.max(0, value));
      const now = performance.now();
      if (now - progressAt >= 50) {
        progressAt = now;
        self.postMessage({ t: "progress", id, p: lastProgress });
      }
    },
    saveCheckpoint(data) {
      const bytes = toBytes(data);
      if (bytes === null || bytes.byteLength > limits.checkpoint_bytes) return -1;
      saved = bytes.slice();
      self.postMessage({ t: "checkpoint", id, data: saved });
      return 0;
    },
  });
  let result;
  try {
    const kernel = await import(msg.url);
    if (typeof kernel.run !== "function") {
      result = failure("invalid", "The module does not export a function run(input, context).", started);
    } else {
      const output = toBytes(await kernel.run(task.stdin ?? new Uint8Array(), context));
      if (output === null) {
        result = failure("trap", "run() must return a string, a Uint8Array or an ArrayBuffer.", started);
      } else if (output.byteLength > limits.output_bytes) {
        result = failure("output_too_large", `The kernel returned more than ${limits.output_bytes} bytes.`, started);
      } else {
        result = {
          exit_code: 0,
          error: null,
          message: "",
          stdout: output.slice(),
          stderr: new Uint8Array(),
          checkpoint: saved,
          progress: lastProgress,
          ms: Math.round(performance.now() - started),
        };
      }
    }
  } catch (exc) {
    const text = exc && exc.stack ? String(exc.stack) : String(exc);
    result = failure("trap", `The kernel threw: ${text}`, started);
  }
  result.checkpoint = saved;
  result.progress = lastProgress;
  self.postMessage({ t: "done", id, result });
};

self.postMessage({ t: "ready" });
