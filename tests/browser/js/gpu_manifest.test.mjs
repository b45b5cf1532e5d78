// node --test: the arithmetic of GPU kernels (static/js/worker/gpu_manifest.js) and what a
// session announces about its GPU (gpu_probe.js): manifest defaults, input padding, output size,
// invocations, dispatch size and its limit, the Params uniform, adapter names, memory offered.
import test from "node:test";
import assert from "node:assert/strict";
import {
  GpuTaskError,
  MAX_WORKGROUPS,
  adapterName,
  dispatchSize,
  invocations,
  outputBytes,
  padInput,
  paddedInputBytes,
  paramsBytes,
  planTask,
  resolveManifest,
} from "../../../static/js/worker/gpu_manifest.js";
import { offeredMemory, validInfo } from "../../../static/js/worker/gpu_probe.js";

test("a manifest gets the contract's defaults", () => {
  assert.deepEqual(resolveManifest({}), {
    entry_point: "main",
    workgroup_size: 64,
    output_bytes: 4096,
    invocations: "output_words",
    float: false,
  });
  assert.deepEqual(resolveManifest(null), resolveManifest({}));
  const given = { entry_point: "go", workgroup_size: 256, output_bytes: "input", invocations: 7, float: true };
  assert.deepEqual(resolveManifest(given), given);
});

test("a manifest outside the contract is refused", () => {
  for (const bad of [
    { workgroup_size: 0 },
    { workgroup_size: 257 },
    { workgroup_size: 1.5 },
    { output_bytes: 6 },
    { output_bytes: 0 },
    { output_bytes: 64 * 1024 * 1024 + 4 },
    { output_bytes: "output" },
    { invocations: 0 },
    { invocations: "words" },
    { entry_point: "" },
  ]) {
    assert.throws(() => resolveManifest(bad), GpuTaskError, JSON.stringify(bad));
  }
  assert.equal(resolveManifest({ output_bytes: 64 * 1024 * 1024 }).output_bytes, 64 * 1024 * 1024);
});

test("input is zero-padded to a multiple of 4 bytes, at least 4", () => {
  assert.deepEqual([0, 1, 3, 4, 5, 8, 1001].map(paddedInputBytes), [4, 4, 4, 4, 8, 8, 1004]);
  assert.deepEqual([...padInput(new Uint8Array([1, 2, 3, 4, 5]))], [1, 2, 3, 4, 5, 0, 0, 0]);
  assert.deepEqual([...padInput(new Uint8Array())], [0, 0, 0, 0]);
});

test("output size and invocations follow the manifest", () => {
  const m = (o) => resolveManifest(o);
  assert.equal(outputBytes(m({ output_bytes: 64 }), 1001), 64);
  assert.equal(outputBytes(m({ output_bytes: "input" }), 1001), 1004);
  assert.equal(invocations(m({ output_bytes: 64 }), 1001), 16);
  assert.equal(invocations(m({ output_bytes: 64, invocations: "input_words" }), 1001), 251);
  assert.equal(invocations(m({ output_bytes: "input" }), 0), 1);
  assert.equal(invocations(m({ invocations: 12345 }), 3), 12345);
});

test("dispatch: ceil(n / workgroup_size) workgroups, at most 65535", () => {
  assert.equal(dispatchSize(1, 64), 1);
  assert.equal(dispatchSize(64, 64), 1);
  assert.equal(dispatchSize(65, 64), 2);
  assert.equal(dispatchSize(MAX_WORKGROUPS * 64, 64), MAX_WORKGROUPS);
  assert.throws(() => dispatchSize(MAX_WORKGROUPS * 64 + 1, 64), { message: "dispatch too large" });
  // An adapter allowing fewer workgroups lowers the limit; one allowing more does not raise it.
  assert.throws(() => dispatchSize(1000, 1, 999), GpuTaskError);
  assert.throws(() => dispatchSize(70000, 1, 1 << 20), GpuTaskError);
});

test("the Params uniform is four little-endian u32", () => {
  const view = new DataView(paramsBytes(1001, 4096, 1024).buffer);
  assert.deepEqual([0, 4, 8, 12].map((at) => view.getUint32(at, true)), [1001, 4096, 1024, 0]);
});

test("a task plan checks the output limit and the adapter's buffers", () => {
  const plan = planTask({ output_bytes: 4096, workgroup_size: 64 }, 10, { output_bytes: 1 << 20 });
  assert.deepEqual(
    { in: plan.inputBytes, out: plan.outputBytes, n: plan.invocations, x: plan.workgroups, big: plan.tooLarge },
    { in: 12, out: 4096, n: 1024, x: 16, big: false },
  );
  assert.equal(planTask({ output_bytes: 4096 }, 10, { output_bytes: 4092 }).tooLarge, true);
  assert.throws(() => planTask({ output_bytes: 4096 }, 10, { output_bytes: 1 << 20 }, { max_buffer: 2048 }), GpuTaskError);
  assert.throws(() => planTask({ output_bytes: 4, invocations: 1 << 30 }, 0, { output_bytes: 4 }), {
    message: "dispatch too large",
  });
});

test("adapter names: the description, else vendor and architecture; software says so", () => {
  assert.equal(adapterName({ vendor: "google", architecture: "swiftshader", device: "", description: "" }, true), "google swiftshader (software)");
  assert.equal(adapterName({ vendor: "nvidia", architecture: "ampere", description: "NVIDIA GeForce RTX 3060" }), "NVIDIA GeForce RTX 3060");
  assert.equal(adapterName({}), "unknown GPU");
  assert.equal(adapterName({ description: "x".repeat(500) }).length, 200);
});

test("only a well-formed probe answer is announced", () => {
  const info = { adapter: "a", max_buffer: 1 << 27, max_workgroups: 65535, max_invocations: 256 };
  assert.deepEqual(validInfo(info), info);
  assert.deepEqual(validInfo({ ...info, extra: 1 }), info);
  for (const bad of [null, undefined, {}, { ...info, adapter: 3 }, { ...info, max_buffer: 0 }, { ...info, max_workgroups: 1.5 }]) {
    assert.equal(validInfo(bad), null);
  }
});

test("memory offered: half the device's, at most 4 GiB; none stated where unknown", () => {
  const GiB = 1024 ** 3;
  assert.equal(offeredMemory(undefined), null);
  assert.equal(offeredMemory(0), null);
  assert.equal(offeredMemory(0.5), GiB / 4);
  assert.equal(offeredMemory(4), 2 * GiB);
  assert.equal(offeredMemory(8), 4 * GiB);
  assert.equal(offeredMemory(32), 4 * GiB);
});
