// node --test: reconnect backoff (static/js/worker/backoff.js) with a fake random source.
import test from "node:test";
import assert from "node:assert/strict";
import { reconnectCeiling, reconnectDelay, RECONNECT_MAX_MS } from "../../../static/js/worker/backoff.js";

test("the ceiling doubles per attempt and caps", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((n) => reconnectCeiling(n)), [2000, 4000, 8000, 16000, 30000, 30000]);
  assert.equal(reconnectCeiling(10_000), RECONNECT_MAX_MS); // a long outage never overflows
});

test("the delay lies in [ceiling/4, ceiling], set by the random draw", () => {
  assert.equal(reconnectDelay(0, () => 0), 500);
  assert.equal(reconnectDelay(0, () => 0.999999), 2000);
  assert.equal(reconnectDelay(2, () => 0.5), 5000);
  assert.equal(reconnectDelay(9, () => 0), 7500);
});

test("a thousand tabs that lose their server together come back spread out", () => {
  // A seeded generator, so the test is deterministic.
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const delays = Array.from({ length: 1000 }, () => reconnectDelay(0, random));
  const perHalfSecond = new Map();
  for (const d of delays) perHalfSecond.set(Math.floor(d / 500), (perHalfSecond.get(Math.floor(d / 500)) || 0) + 1);
  // Over the first window's three half-seconds, none takes more than about a third of them.
  assert.equal(Math.min(...delays) >= 500 && Math.max(...delays) <= 2000, true);
  for (const n of perHalfSecond.values()) assert.ok(n < 420, `burst of ${n}`);
  assert.ok(new Set(delays).size > 500);
});
