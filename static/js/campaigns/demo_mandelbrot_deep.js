// Deep-zoom Mandelbrot demo: the GPU (WGSL) and the CPU (WebAssembly) version of the same
// campaign side by side, each canvas painted tile by tile as its results arrive. A task's
// input is the 40 bytes mandelbrot_deep_gen writes (u32 words: 0 maxiter, 8 x0 | y0 << 16,
// 9 W | H << 16); its output is 64 x 64 little-endian u32 iteration counts, row-major
// (kernels/gpu/mandelbrot_deep.wgsl, kernels/src/mandelbrot_deep.c).

import { decodeBase64, followFeed } from "./demo_feed.js";
import { formatNumber } from "./format.js";
import { paletteAt } from "./palette.js";

const TILE = 64;
/** Iterations per pass through the palette: deep zooms have counts in the thousands whose
 * differences, not their size, carry the picture, so the palette cycles. */
const PERIOD = 96;

/**
 * The colour of an iteration count (a fixed function: the browser test uses it).
 * @param {number} n
 * @param {number} maxiter
 * @returns {number[]}
 */
export function color(n, maxiter) {
  if (n >= maxiter) return [0, 0, 0];
  const t = (n % PERIOD) / PERIOD;
  return paletteAt(t);
}

/** One canvas of the page and what has been painted on it. */
function painter(section) {
  const canvas = /** @type {HTMLCanvasElement} */ (section.querySelector("canvas"));
  const ctx = canvas.getContext("2d");
  const paintedEl = section.querySelector("[data-painted]");
  const totalEl = section.querySelector("[data-total]");
  const state = { width: 0, height: 0, maxiter: 0, counts: /** @type {Uint32Array | null} */ (null), painted: 0 };

  function paint(r) {
    const input = decodeBase64(r.input);
    const output = decodeBase64(r.output);
    if (input.length !== 40 || output.length !== TILE * TILE * 4) return;
    const words = new DataView(input.buffer);
    const maxiter = words.getUint32(0, true);
    const [x0, y0] = [words.getUint32(32, true) & 0xffff, words.getUint32(32, true) >>> 16];
    const [w, h] = [words.getUint32(36, true) & 0xffff, words.getUint32(36, true) >>> 16];
    if (w === 0 || h === 0 || x0 + TILE > w || y0 + TILE > h) return;
    if (state.counts === null || state.width !== w || state.height !== h) {
      Object.assign(state, { width: w, height: h, maxiter, counts: new Uint32Array(w * h), painted: 0 });
      canvas.width = w;
      canvas.height = h;
      canvas.style.aspectRatio = `${w} / ${h}`;
      ctx.clearRect(0, 0, w, h);
    }
    const counts = new DataView(output.buffer);
    const image = ctx.createImageData(TILE, TILE);
    for (let i = 0; i < TILE * TILE; i++) {
      const n = counts.getUint32(i * 4, true);
      state.counts[(y0 + Math.floor(i / TILE)) * w + x0 + (i % TILE)] = n;
      const [red, green, blue] = color(n, maxiter);
      image.data.set([red, green, blue, 255], i * 4);
    }
    ctx.putImageData(image, x0, y0);
    state.painted += 1;
  }

  followFeed({
    root: section.dataset.feedUrl ? section : null,
    onResults(results) {
      for (const r of results) paint(r);
      paintedEl.textContent = formatNumber(state.painted);
      canvas.dataset.painted = String(state.painted);
    },
    onCampaign(c) {
      totalEl.textContent = formatNumber(c.tasks_total);
      const badge = section.querySelector("[data-twin-state]");
      if (badge) {
        badge.textContent = c.state;
        badge.className = `badge badge-${c.state}`;
      }
    },
  });
  return state;
}

const views = {};
for (const section of document.querySelectorAll("[data-deep]")) {
  views[/** @type {HTMLElement} */ (section).dataset.deep] = painter(section);
}
window.ccgscDeepZoom = { ...views, color };
