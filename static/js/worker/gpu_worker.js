// Module Worker that runs GPU kernels (WGSL compute shaders, contract v1: docs/kernels.md
// "GPU kernels") through WebGPU. It runs in a dedicated worker, never on the page's main thread,
// served like the other kernel workers with a CSP that forbids every connection: the page
// fetches and verifies the WGSL (kernels.js) and posts its text here.
//
// One GPUDevice per worker, kept across tasks, with each kernel's pipeline compiled once. The
// page enforces the wall-time limit: a task past it gets the worker terminated, which abandons
// its device (the browser destroys it with the worker), and the next task gets a fresh worker.
//
// Messages in:  {t: "probe"}
//               {t: "run", id, gpu: {sha, source, manifest}, task: {stdin}, limits}
// Messages out: {t: "ready"}, {t: "probe", info: GpuInfo | null, software (a fallback adapter)},
//               {t: "done", id, result}   (result as wasi_host.runKernel's)

import { GpuTaskError, adapterName, padInput, paramsBytes, planTask } from "./gpu_manifest.js";

/** @typedef {import("./gpu_manifest.js").GpuInfo} GpuInfo */

const encoder = new TextEncoder();
const MAX_PIPELINES = 4;
// WebGPU's default limits (what requestDevice() without requiredLimits gives).
const DEFAULT_LIMITS = {
  maxStorageBufferBindingSize: 134217728,
  maxComputeWorkgroupsPerDimension: 65535,
  maxComputeInvocationsPerWorkgroup: 256,
};
// WebGPU's flag values (GPUBufferUsage, GPUMapMode, GPUShaderStage), spelled out so this file
// also reads where the globals are not declared (Node, tsc without WebGPU's types).
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 };
const MAP_READ = 0x1;
const COMPUTE = 0x4;

/** @type {any} the worker's navigator.gpu (WebGPU is not in TypeScript's DOM library yet) */
const gpu = /** @type {any} */ (self.navigator).gpu;

/** @type {Promise<{adapter: any, software: boolean, info: GpuInfo | null}> | null} */
let adapterPromise = null;
/** @type {Promise<any> | null} the GPUDevice */
let devicePromise = null;
/** @type {any} */
let layouts = null;
/** @type {Map<string, Promise<any>>} kernel sha256 -> GPUComputePipeline */
const pipelines = new Map();

/** The adapter and what the session may say about it (null: no WebGPU adapter here). */
function adapter() {
  adapterPromise ??= (async () => {
    if (!gpu) return { adapter: null, software: false, info: null };
    let found = null;
    try {
      found = await gpu.requestAdapter();
    } catch {
      found = null;
    }
    if (!found) return { adapter: null, software: false, info: null };
    const info = found.info || (found.requestAdapterInfo ? await found.requestAdapterInfo() : {});
    const fallback = Boolean(info.isFallbackAdapter ?? found.isFallbackAdapter);
    // The device is created with WebGPU's default limits, as the native wgpu host's is: the
    // session reports those (or the adapter's, if lower), so a kernel sees the same everywhere.
    const limit = (name) => Math.min(Number(found.limits[name]), DEFAULT_LIMITS[name]);
    return {
      adapter: found,
      software: fallback,
      info: {
        adapter: adapterName(info, fallback),
        max_buffer: limit("maxStorageBufferBindingSize"),
        max_workgroups: limit("maxComputeWorkgroupsPerDimension"),
        max_invocations: limit("maxComputeInvocationsPerWorkgroup"),
      },
    };
  })();
  return adapterPromise;
}

/** This worker's device, created on first use with WebGPU's default limits. A lost device is
 * forgotten (with its pipelines): the next task asks for a new one. */
function device() {
  devicePromise ??= (async () => {
    const { adapter: found } = await adapter();
    if (!found) throw new Error("this browser offers no WebGPU adapter");
    const dev = await found.requestDevice();
    dev.lost.then(() => {
      devicePromise = null;
      pipelines.clear();
      layouts = null;
    });
    return dev;
  })().catch((exc) => {
    devicePromise = null;
    throw exc;
  });
  return devicePromise;
}

/** The contract's bind group: input (read-only storage), output (storage), params (uniform). */
function bindLayouts(dev) {
  if (layouts === null) {
    const group = dev.createBindGroupLayout({
      entries: [
        { binding: 0, visibility: COMPUTE, buffer: { type: "read-only-storage" } },
        { binding: 1, visibility: COMPUTE, buffer: { type: "storage" } },
        { binding: 2, visibility: COMPUTE, buffer: { type: "uniform" } },
      ],
    });
    layouts = { group, pipeline: dev.createPipelineLayout({ bindGroupLayouts: [group] }) };
  }
  return layouts;
}

/** The compiled kernel (once per worker and kernel). Compile errors become GpuTaskErrors. */
function pipeline(dev, sha, source, manifest) {
  const key = `${sha}:${manifest.entry_point}`;
  let hit = pipelines.get(key);
  if (!hit) {
    hit = (async () => {
      const module = dev.createShaderModule({ code: source });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === "error");
      if (errors.length) {
        throw new GpuTaskError(
          `WGSL does not compile: ${errors.map((m) => `${m.lineNum}:${m.linePos}: ${m.message}`).join("; ")}`,
        );
      }
      try {
        return await dev.createComputePipelineAsync({
          layout: bindLayouts(dev).pipeline,
          compute: { module, entryPoint: manifest.entry_point },
        });
      } catch (exc) {
        throw new GpuTaskError(`the compute pipeline was refused: ${exc && exc.message ? exc.message : exc}`);
      }
    })();
    pipelines.set(key, hit);
    hit.catch(() => pipelines.delete(key));
    while (pipelines.size > MAX_PIPELINES) pipelines.delete(pipelines.keys().next().value);
  }
  return hit;
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

/** One task: buffers per the contract, one dispatch, the output buffer read back whole. */
async function run(msg) {
  const started = performance.now();
  const stdin = msg.task.stdin instanceof Uint8Array ? msg.task.stdin : new Uint8Array();
  const { info } = await adapter();
  if (info === null) return failure("host", "This browser offers no WebGPU adapter.", started);
  const plan = planTask(msg.gpu.manifest, stdin.length, msg.limits, info);
  if (plan.tooLarge) {
    return failure("output_too_large", `The kernel's output (${plan.outputBytes} bytes) exceeds the limit of ${msg.limits.output_bytes} bytes.`, started);
  }
  const dev = await device();
  const compute = await pipeline(dev, msg.gpu.sha, msg.gpu.source, plan.manifest);
  dev.pushErrorScope("out-of-memory");
  dev.pushErrorScope("validation");
  const buffers = [];
  const buffer = (size, usage) => {
    const b = dev.createBuffer({ size, usage });
    buffers.push(b);
    return b;
  };
  try {
    const input = buffer(plan.inputBytes, USAGE.STORAGE | USAGE.COPY_DST);
    const output = buffer(plan.outputBytes, USAGE.STORAGE | USAGE.COPY_SRC); // zeroed by WebGPU
    const params = buffer(16, USAGE.UNIFORM | USAGE.COPY_DST);
    const readback = buffer(plan.outputBytes, USAGE.MAP_READ | USAGE.COPY_DST);
    dev.queue.writeBuffer(input, 0, padInput(stdin));
    dev.queue.writeBuffer(params, 0, paramsBytes(stdin.length, plan.outputBytes, plan.invocations));
    const group = dev.createBindGroup({
      layout: bindLayouts(dev).group,
      entries: [
        { binding: 0, resource: { buffer: input } },
        { binding: 1, resource: { buffer: output } },
        { binding: 2, resource: { buffer: params } },
      ],
    });
    const encoderCmd = dev.createCommandEncoder();
    const pass = encoderCmd.beginComputePass();
    pass.setPipeline(compute);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(plan.workgroups, 1, 1);
    pass.end();
    encoderCmd.copyBufferToBuffer(output, 0, readback, 0, plan.outputBytes);
    dev.queue.submit([encoderCmd.finish()]);
    const invalid = await dev.popErrorScope();
    const oom = await dev.popErrorScope();
    if (oom) return failure("out_of_memory", `The GPU is out of memory: ${oom.message}`, started);
    if (invalid) return failure("invalid", `WebGPU refused the task: ${invalid.message}`, started);
    await readback.mapAsync(MAP_READ);
    const stdout = new Uint8Array(readback.getMappedRange().slice(0));
    readback.unmap();
    return {
      exit_code: 0,
      error: null,
      message: "",
      stdout,
      stderr: new Uint8Array(),
      checkpoint: null,
      progress: 1,
      ms: Math.round(performance.now() - started),
    };
  } finally {
    for (const b of buffers) b.destroy();
  }
}

self.onmessage = async (event) => {
  const msg = event.data;
  if (!msg) return;
  if (msg.t === "probe") {
    const { info, software } = await adapter();
    self.postMessage({ t: "probe", info, software });
    return;
  }
  if (msg.t !== "run") return;
  const started = performance.now();
  let result;
  try {
    result = await run(msg);
  } catch (exc) {
    const text = exc && exc.message ? exc.message : String(exc);
    result = exc instanceof GpuTaskError ? failure("invalid", text, started) : failure("trap", `The GPU kernel failed: ${text}`, started);
  }
  self.postMessage({ t: "done", id: msg.id, result }, { transfer: [result.stdout.buffer, result.stderr.buffer] });
};

self.postMessage({ t: "ready" });
