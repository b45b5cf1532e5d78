// Kernels and static data by content hash: fetched once over plain HTTP (immutable URLs),
// kept in the Cache API across visits, verified against their sha256, and for WebAssembly
// compiled once per page into a WebAssembly.Module that is posted to every hand's worker.
// (Chromium no longer stores compiled modules in IndexedDB; its code cache keeps the machine
// code of modules compiled from the same bytes, so a second visit compiles quickly.)

import { parseMemoryLimits } from "./wasi_host.js";

const CACHE_NAME = "ccgsc-blobs-v1";
const MAX_COMPILED = 8;
const MAX_STATIC = 4;

const compiled = new Map(); // sha256 -> Promise<{module, memory}>
const statics = new Map(); // sha256 -> Promise<Uint8Array>

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function openCache() {
  try {
    return "caches" in self ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null; // opaque origins, private modes: the HTTP cache still helps
  }
}

/** The bytes of blob `sha256` (ext "wasm", "js", "wgsl" or ""), verified. */
export async function fetchBlob(base, sha256, ext = "") {
  const url = `${base}/blobs/${sha256}${ext ? `.${ext}` : ""}`;
  const cache = await openCache();
  let response = cache ? await cache.match(url) : undefined;
  const cached = response !== undefined;
  if (!cached) {
    response = await fetch(url, { credentials: "omit" });
    if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  }
  const bytes = new Uint8Array(await response.clone().arrayBuffer());
  if (self.crypto && crypto.subtle) {
    const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
    if (digest !== sha256) {
      if (cache && cached) await cache.delete(url);
      throw new Error(`blob ${sha256} has the wrong content (sha256 ${digest})`);
    }
  }
  if (cache && !cached) {
    try {
      await cache.put(url, response);
    } catch {
      // quota: fine, it is only a cache
    }
  }
  return bytes;
}

function remember(map, key, promise, limit) {
  map.set(key, promise);
  promise.catch(() => map.delete(key));
  while (map.size > limit) map.delete(map.keys().next().value);
  return promise;
}

/** {module, memory: {min, max}} for a WebAssembly kernel, compiled once per page. */
export function wasmKernel(base, sha256) {
  const hit = compiled.get(sha256);
  if (hit) {
    compiled.delete(sha256); // most recently used goes last
    compiled.set(sha256, hit);
    return hit;
  }
  const promise = (async () => {
    const bytes = await fetchBlob(base, sha256, "wasm");
    const module = await WebAssembly.compile(bytes);
    return { module, memory: parseMemoryLimits(bytes) };
  })();
  return remember(compiled, sha256, promise, MAX_COMPILED);
}

/** A campaign's static data. */
export function staticData(base, sha256) {
  const hit = statics.get(sha256);
  if (hit) return hit;
  return remember(statics, sha256, fetchBlob(base, sha256, ""), MAX_STATIC);
}

/** Where a hand's JS-kernel worker imports a JavaScript kernel from (after checking it). */
export async function jsKernelUrl(base, sha256) {
  await fetchBlob(base, sha256, "js"); // verifies the bytes and warms the caches
  return `${base}/blobs/${sha256}.js`;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A GPU kernel's WGSL source (blob `sha256`.wgsl, verified), for the GPU worker to compile. */
export async function gpuKernelSource(base, sha256) {
  return utf8.decode(await fetchBlob(base, sha256, "wgsl"));
}
