// node --test: the WASI host (static/js/worker/wasi_host.js) against the conformance cases,
// in Node's V8 (the browser runs the same module; tests/browser/test_conformance.py runs it
// in Chromium through a real worker). Cases that time out need the worker's time limit (the
// page terminates the worker) and are skipped here.
import test from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { runKernel, parseMemoryLimits, DEFAULT_LIMITS } from "../../../static/js/worker/wasi_host.js";

const root = new URL("../../../", import.meta.url);
const cases = JSON.parse(readFileSync(new URL("tests/conformance/cases.json", root), "utf8"));
const text = (s) => (s === null ? null : new TextEncoder().encode(s));

for (const c of cases) {
  test(c.name, { skip: c.expect.error === "timeout" && "needs a worker to terminate" }, () => {
    const bytes = readFileSync(new URL(`kernels/build/${c.kernel}.wasm`, root));
    const result = runKernel(
      new WebAssembly.Module(bytes),
      { stdin: text(c.stdin), args: c.args, env: c.env, static: text(c.static), checkpoint: text(c.checkpoint) },
      { ...DEFAULT_LIMITS, ...(c.limits || {}) },
      {},
      parseMemoryLimits(bytes),
    );
    const observed = {
      exit_code: result.exit_code,
      error: result.error,
      checkpoint: result.checkpoint === null ? null : new TextDecoder().decode(result.checkpoint),
      progress: result.progress,
    };
    if ("stdout_sha256" in c.expect) observed.stdout_sha256 = createHash("sha256").update(result.stdout).digest("hex");
    else observed.stdout = new TextDecoder().decode(result.stdout);
    if ("stderr" in c.expect) observed.stderr = new TextDecoder().decode(result.stderr);
    assert.deepEqual(observed, c.expect);
  });
}
