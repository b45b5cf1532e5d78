// Mandelbrot demo: paint each tile on the canvas as its result arrives. A task's input is
// "W H X0 Y0 TW TH MAXITER"; its output is TW*TH little-endian uint16 iteration counts,
// row-major (docs/kernels.md).

import { decodeBase64, decodeText, followFeed } from "./demo_feed.js";
import { formatNumber } from "./format.js";
import { paletteAt } from "./palette.js";

const canvas = /** @type {HTMLCanvasElement} */ (document.getElementById("mandelbrot-canvas"));
const ctx = canvas.getContext("2d");
const paintedEl = document.getElementById("tiles-painted");
const totalEl = document.getElementById("tiles-total");

/** The colour of an iteration count: a fixed, documented function (the browser test uses it). */
export function color(n, maxiter) {
  if (n >= maxiter) return [0, 0, 0];
  const t = (Math.log(n + 1) / Math.log(maxiter + 1)) * 3 % 1; // three passes through the palette
  return paletteAt(t);
}

const state = { width: 0, height: 0, maxiter: 0, counts: null, painted: 0, color };
window.ccgscMandelbrot = state;

function setup(w, h, maxiter) {
  state.width = w;
  state.height = h;
  state.maxiter = maxiter;
  state.counts = new Uint16Array(w * h);
  canvas.width = w;
  canvas.height = h;
  canvas.style.aspectRatio = `${w} / ${h}`;
  // Left transparent: unpainted tiles show the canvas's placeholder pattern (campaigns.css),
  // never black, which is the colour of the set itself.
  ctx.clearRect(0, 0, w, h);
}

function paint(r) {
  const geometry = decodeText(r.input).trim().split(/\s+/).map(Number);
  if (geometry.length !== 7 || geometry.some((v) => !Number.isInteger(v) || v < 0)) return;
  const [w, h, x0, y0, tw, th, maxiter] = geometry;
  if (!state.counts || state.width !== w || state.height !== h) setup(w, h, maxiter);
  const bytes = decodeBase64(r.output);
  if (bytes.length !== tw * th * 2 || x0 + tw > w || y0 + th > h || tw === 0 || th === 0) return;
  const view = new DataView(bytes.buffer);
  const image = ctx.createImageData(tw, th);
  for (let i = 0; i < tw * th; i++) {
    const n = view.getUint16(i * 2, true);
    state.counts[(y0 + Math.floor(i / tw)) * w + x0 + (i % tw)] = n;
    const [red, green, blue] = color(n, maxiter);
    image.data[i * 4] = red;
    image.data[i * 4 + 1] = green;
    image.data[i * 4 + 2] = blue;
    image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, x0, y0);
  state.painted += 1;
}

followFeed({
  onResults(results) {
    for (const r of results) paint(r);
    paintedEl.textContent = formatNumber(state.painted);
    canvas.dataset.painted = String(state.painted);
  },
  onCampaign(c) {
    totalEl.textContent = formatNumber(c.tasks_total);
  },
});
