// Whether this browser can run GPU kernels, asked where they would run: in a GPU worker
// (gpu_worker.js), not on the page. A browser without WebGPU, or whose WebGPU offers no
// adapter (Chromium without a usable GPU or its software fallback), answers null, and a
// session that got null never announces `gpu`, so the server never sends it GPU work.

/** @typedef {import("./gpu_manifest.js").GpuInfo} GpuInfo */

const PROBE_TIMEOUT_MS = 10000;

/**
 * The adapter a GPU worker gets (info null: none), and whether it is a software (fallback)
 * adapter: the CPU emulating a GPU.
 * @param {string} url the GPU worker's script
 * @param {number} [timeoutMs]
 * @returns {Promise<{info: GpuInfo | null, software: boolean}>}
 */
export function probeGpu(url, timeoutMs = PROBE_TIMEOUT_MS) {
  const none = { info: null, software: false };
  if (!("gpu" in navigator)) return Promise.resolve(none);
  return new Promise((resolve) => {
    let worker;
    let timer = null;
    const done = (answer) => {
      clearTimeout(timer);
      if (worker) worker.terminate();
      resolve(answer);
    };
    try {
      worker = new Worker(url, { type: "module", name: "ccgsc-gpu-probe" });
    } catch {
      resolve(none);
      return;
    }
    timer = setTimeout(() => done(none), timeoutMs);
    worker.onmessage = (event) => {
      const msg = event.data;
      if (msg && msg.t === "ready") worker.postMessage({ t: "probe" });
      else if (msg && msg.t === "probe") {
        const info = validInfo(msg.info);
        done({ info, software: info !== null && Boolean(msg.software) });
      }
    };
    worker.onerror = (event) => {
      event.preventDefault();
      done(none);
    };
  });
}

/**
 * The probe's answer if it is one the protocol takes (GpuInfo), else null.
 * @param {any} info
 * @returns {GpuInfo | null}
 */
export function validInfo(info) {
  if (!info || typeof info.adapter !== "string") return null;
  const whole = (/** @type {any} */ n) => Number.isSafeInteger(n) && n > 0;
  if (!whole(info.max_buffer) || !whole(info.max_workgroups) || !whole(info.max_invocations)) return null;
  return {
    adapter: info.adapter.slice(0, 200),
    max_buffer: info.max_buffer,
    max_workgroups: info.max_workgroups,
    max_invocations: info.max_invocations,
  };
}

/**
 * Bytes of memory this session offers one kernel (Hello.memory): half of what the device
 * reports (navigator.deviceMemory, in GiB, which Chromium rounds and caps at 8), at most the
 * 4 GiB a wasm32 kernel can address; null where the browser does not tell (no limit stated).
 * @param {number | undefined} deviceMemoryGiB
 * @returns {number | null}
 */
export function offeredMemory(deviceMemoryGiB) {
  if (!(typeof deviceMemoryGiB === "number" && deviceMemoryGiB > 0)) return null;
  const GiB = 1024 * 1024 * 1024;
  return Math.min(4 * GiB, Math.floor((deviceMemoryGiB * GiB) / 2));
}
