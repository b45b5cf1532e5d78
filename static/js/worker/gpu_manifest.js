// The arithmetic of GPU kernels (contract v1, docs/kernels.md "GPU kernels"): a manifest's
// defaults, how a task's input is padded into the input buffer, the output size, the number
// of invocations and the dispatch size, and the Params uniform. Pure functions, shared by the
// GPU worker (gpu_worker.js) and its Node unit tests; nothing here touches navigator.gpu.

/**
 * A GPU kernel's manifest with its defaults resolved (the server sends it resolved; a missing
 * field still gets the contract's default here).
 * @typedef {{
 *   entry_point: string,
 *   workgroup_size: number,
 *   output_bytes: number | "input",
 *   invocations: "output_words" | "input_words" | number,
 *   float: boolean,
 * }} GpuManifest
 */

/**
 * What a session tells the server about its GPU (protocol Hello.gpu).
 * @typedef {{adapter: string, max_buffer: number, max_workgroups: number, max_invocations: number}} GpuInfo
 */

/** The most workgroups one dispatch may ask for (x), whatever the adapter allows. */
export const MAX_WORKGROUPS = 65535;
/** The largest output buffer a manifest may ask for. */
export const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
/** Bytes of the Params uniform: input_bytes, output_bytes, invocations, reserved (u32 each). */
export const PARAMS_BYTES = 16;

/** A task the contract refuses before anything reaches the GPU (reported as "invalid"). */
export class GpuTaskError extends Error {}

/**
 * The manifest with the contract's defaults filled in, checked.
 * @param {Partial<GpuManifest> | null | undefined} raw
 * @returns {GpuManifest}
 */
export function resolveManifest(raw) {
  const m = raw || {};
  const manifest = {
    entry_point: m.entry_point ?? "main",
    workgroup_size: m.workgroup_size ?? 64,
    output_bytes: m.output_bytes ?? 4096,
    invocations: m.invocations ?? "output_words",
    float: Boolean(m.float),
  };
  if (typeof manifest.entry_point !== "string" || !manifest.entry_point) {
    throw new GpuTaskError("manifest: entry_point must be a non-empty string");
  }
  const wg = manifest.workgroup_size;
  if (!Number.isInteger(wg) || wg < 1 || wg > 256) {
    throw new GpuTaskError("manifest: workgroup_size must be an integer from 1 to 256");
  }
  const out = manifest.output_bytes;
  if (out !== "input" && (!Number.isInteger(out) || out < 4 || out > MAX_OUTPUT_BYTES || out % 4 !== 0)) {
    throw new GpuTaskError('manifest: output_bytes must be a multiple of 4 from 4 to 64 MiB, or "input"');
  }
  const inv = manifest.invocations;
  if (inv !== "output_words" && inv !== "input_words" && !(Number.isInteger(inv) && inv > 0)) {
    throw new GpuTaskError('manifest: invocations must be "output_words", "input_words" or a positive integer');
  }
  return manifest;
}

/**
 * Size of the input buffer for `length` bytes of task input: a multiple of 4, at least 4.
 * @param {number} length
 */
export function paddedInputBytes(length) {
  return Math.max(4, Math.ceil(length / 4) * 4);
}

/**
 * The task input copied into a zero-padded buffer of paddedInputBytes(input.length).
 * @param {Uint8Array} input
 * @returns {Uint8Array}
 */
export function padInput(input) {
  const padded = new Uint8Array(paddedInputBytes(input.length));
  padded.set(input);
  return padded;
}

/**
 * The output buffer's size for a task of `inputLength` bytes.
 * @param {GpuManifest} manifest
 * @param {number} inputLength
 */
export function outputBytes(manifest, inputLength) {
  return manifest.output_bytes === "input" ? paddedInputBytes(inputLength) : manifest.output_bytes;
}

/**
 * How many invocations the kernel runs for a task (`params.invocations`).
 * @param {GpuManifest} manifest
 * @param {number} inputLength
 */
export function invocations(manifest, inputLength) {
  if (manifest.invocations === "output_words") return outputBytes(manifest, inputLength) / 4;
  if (manifest.invocations === "input_words") return paddedInputBytes(inputLength) / 4;
  return manifest.invocations;
}

/**
 * Workgroups to dispatch for `count` invocations: x = ceil(count / workgroup_size), y = z = 1.
 * @param {number} count
 * @param {number} workgroupSize
 * @param {number} [limit] the adapter's maxComputeWorkgroupsPerDimension, if lower
 * @returns {number}
 */
export function dispatchSize(count, workgroupSize, limit = MAX_WORKGROUPS) {
  const x = Math.ceil(count / workgroupSize);
  if (x > Math.min(MAX_WORKGROUPS, limit)) throw new GpuTaskError("dispatch too large");
  return x;
}

/**
 * The Params uniform's bytes: {input_bytes, output_bytes, invocations, reserved}, little-endian
 * u32 (input_bytes is the task input's length before padding).
 * @param {number} inputLength
 * @param {number} outBytes
 * @param {number} count
 */
export function paramsBytes(inputLength, outBytes, count) {
  const bytes = new Uint8Array(PARAMS_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, inputLength, true);
  view.setUint32(4, outBytes, true);
  view.setUint32(8, count, true);
  view.setUint32(12, 0, true);
  return bytes;
}

/**
 * Everything a run needs to know about a task's buffers and dispatch, checked against the
 * output limit and the adapter's largest storage buffer.
 * @param {Partial<GpuManifest>} rawManifest
 * @param {number} inputLength
 * @param {{output_bytes: number}} limits
 * @param {{max_buffer?: number, max_workgroups?: number}} [adapter]
 */
export function planTask(rawManifest, inputLength, limits, adapter = {}) {
  const manifest = resolveManifest(rawManifest);
  const out = outputBytes(manifest, inputLength);
  const inBytes = paddedInputBytes(inputLength);
  const count = invocations(manifest, inputLength);
  const workgroups = dispatchSize(count, manifest.workgroup_size, adapter.max_workgroups ?? MAX_WORKGROUPS);
  const maxBuffer = adapter.max_buffer ?? Infinity;
  if (inBytes > maxBuffer || out > maxBuffer) {
    throw new GpuTaskError(`a buffer of this task exceeds the adapter's largest storage buffer (${maxBuffer} bytes)`);
  }
  return { manifest, inputBytes: inBytes, outputBytes: out, invocations: count, workgroups, tooLarge: out > limits.output_bytes };
}

/**
 * A readable name for an adapter (GPUAdapterInfo): its description where the browser gives
 * one, else vendor and architecture; a software (fallback) adapter says so.
 * @param {{vendor?: string, architecture?: string, device?: string, description?: string} | null | undefined} info
 * @param {boolean} [fallback]
 */
export function adapterName(info, fallback = false) {
  const i = info || {};
  const name = (i.description || [i.vendor, i.architecture, i.device].filter(Boolean).join(" ") || "unknown GPU").trim();
  return (fallback ? `${name} (software)` : name).slice(0, 200);
}
