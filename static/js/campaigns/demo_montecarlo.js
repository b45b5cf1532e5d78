// Monte Carlo π demo: the running estimate summed from the results in the page, the reducer's
// server-side answer, and how the estimate converges. Each result is "INSIDE ITERATIONS\n".

import { decodeText, followFeed } from "./demo_feed.js";
import { formatNumber } from "./format.js";

const PI = "3.14159265358979";
let inside = 0n;
let total = 0n;
const xs = [];
const ys = [];

const DECIMALS = 9;

function estimate(i, t) {
  // 4 * i / t with DECIMALS decimals, in integers (the counts exceed 2^53 on long runs).
  if (t === 0n) return null;
  const scaled = (4n * i * 10n ** BigInt(DECIMALS)) / t;
  const text = scaled.toString().padStart(DECIMALS + 1, "0");
  return `${text.slice(0, -DECIMALS)}.${text.slice(-DECIMALS)}`;
}

const compact = new Intl.NumberFormat(undefined, { notation: "compact" });

// The y axis is centred on pi and just wide enough for the estimates so far.
function piRange(u, min, max) {
  const spread = Math.max(Math.abs(min - Math.PI), Math.abs(max - Math.PI), 1e-6) * 1.25;
  return [Math.PI - spread, Math.PI + spread];
}

function showDigits(el, text) {
  el.replaceChildren();
  let matching = true;
  for (let k = 0; k < text.length; k++) {
    matching = matching && text[k] === PI[k];
    const span = document.createElement("span");
    span.className = matching ? "match" : "miss";
    span.textContent = text[k];
    el.append(span);
  }
  el.setAttribute("aria-label", text);
}

const uPlot = window.uPlot;
const chartEl = document.getElementById("pi-chart");
const plot = uPlot
  ? new uPlot(
      {
        width: Math.max(200, chartEl.clientWidth),
        height: 200,
        legend: { show: false },
        scales: { x: { time: false }, y: { range: piRange } },
        series: [{}, { stroke: "#3b5bdb", width: 2, points: { show: false } }, { stroke: "#2b8a3e", dash: [4, 4], points: { show: false } }],
        axes: [
          { values: (u, v) => v.map((x) => compact.format(x)), label: "random points" },
          { size: 90, values: (u, v) => v.map((y) => y.toFixed(6)) },
        ],
      },
      [[], [], []],
      chartEl,
    )
  : null;

followFeed({
  onResults(results) {
    for (const r of results) {
      const parts = decodeText(r.output).trim().split(/\s+/);
      if (parts.length !== 2) continue;
      inside += BigInt(parts[0]);
      total += BigInt(parts[1]);
      xs.push(Number(total));
      ys.push(Number(estimate(inside, total)));
    }
    const text = estimate(inside, total);
    if (text) {
      showDigits(document.getElementById("pi-estimate"), text);
      document.getElementById("pi-samples").textContent = formatNumber(total);
      document.getElementById("pi-error").textContent = Math.abs(Number(text) - Math.PI).toExponential(2);
    }
    if (plot) plot.setData([xs, ys, xs.map(() => Math.PI)]);
    window.ccgscMonteCarlo = { inside: inside.toString(), total: total.toString(), estimate: text };
  },
  onCampaign(c) {
    if (!c.reduced || !document.getElementById("pi-reduced")) return; // no reducer: no card
    const [value] = c.reduced.trim().split(/\s+/);
    showDigits(document.getElementById("pi-reduced"), value);
    document.getElementById("pi-reduced-raw").textContent = c.reduced.trim();
  },
});
