// Reconnect delays: exponential, capped, with jitter (the native worker's workers/native/backoff.py
// does the same). When a server process dies, every browser it served loses its socket in the
// same instant; without jitter they would all come back in the same instant (and again after
// each failure), a thundering herd on the processes left. The delay is drawn from
// [ceiling/4, ceiling]: wide enough to spread thousands of tabs over the first seconds, and a
// lone tab still retries within about a second. Behind the load balancer the retry reaches
// another process.

export const RECONNECT_INITIAL_MS = 2000;
export const RECONNECT_MAX_MS = 30000;

/** The un-jittered delay before reconnect attempt `attempt` (0 for the first). */
export function reconnectCeiling(attempt, initial = RECONNECT_INITIAL_MS, maximum = RECONNECT_MAX_MS) {
  return Math.min(maximum, initial * 2 ** Math.min(Math.max(0, attempt), 30));
}

/** The jittered delay in ms; `random` returns [0, 1) like Math.random (tests pass a fake). */
export function reconnectDelay(attempt, random = Math.random, initial = RECONNECT_INITIAL_MS, maximum = RECONNECT_MAX_MS) {
  const ceiling = reconnectCeiling(attempt, initial, maximum);
  return Math.round(ceiling * (0.25 + 0.75 * random()));
}
