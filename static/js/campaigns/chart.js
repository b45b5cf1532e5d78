// Throughput over time: a thin wrapper over the vendored uPlot (static/vendor/uplot, loaded as
// a classic script that defines window.uPlot). Points are (epoch seconds, tasks per second).

const MAX_POINTS = 720;

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

export function createThroughputChart(el, history) {
  const xs = history.map((p) => p[0]);
  const ys = history.map((p) => p[1]);
  const stroke = cssVar("--primary", "#3b5bdb");
  const axis = { stroke: cssVar("--muted", "#5d6577"), grid: { stroke: cssVar("--border", "#dfe3ec"), width: 1 } };
  const width = () => Math.max(200, el.clientWidth);
  const uPlot = window.uPlot;
  let plot = null;
  if (uPlot) {
    plot = new uPlot(
      {
        width: width(),
        height: 220,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
        series: [
          {},
          { label: "tasks/s", stroke, width: 2, fill: `color-mix(in srgb, ${stroke} 14%, transparent)`, points: { show: false } },
        ],
        axes: [axis, { ...axis, size: 50 }],
      },
      [xs, ys],
      el,
    );
    new ResizeObserver(() => plot.setSize({ width: width(), height: 220 })).observe(el);
  } else {
    el.textContent = "The chart library did not load.";
  }
  el.dataset.points = String(xs.length);

  return {
    push(t, value) {
      // A snapshot may arrive twice (reconnect, several publishers): keep time increasing.
      if (xs.length && t <= xs[xs.length - 1]) return;
      xs.push(t);
      ys.push(value);
      if (xs.length > MAX_POINTS) {
        xs.shift();
        ys.shift();
      }
      el.dataset.points = String(xs.length);
      el.dataset.last = String(value);
      if (plot) plot.setData([xs, ys]);
    },
  };
}
