// What the pages add to `window` (for the browser tests and the curious) and the browser APIs
// TypeScript's DOM library does not declare. Read by `make typecheck` only.

interface Window {
  ccgscHarness?: import("./worker/harness.js").Harness;
  ccgscCampaign?: unknown;
  ccgscMandelbrot?: unknown;
  ccgscDeepZoom?: unknown;
  ccgscMonteCarlo?: unknown;
  ccgscPrimes?: unknown;
  /** static/vendor/uplot, loaded by a classic script tag before the page's modules. */
  uPlot: any;
}

/** The Battery Status API (Chromium). */
interface BatteryManager extends EventTarget {
  charging: boolean;
  level: number;
}

interface Navigator {
  getBattery?: () => Promise<BatteryManager>;
}
