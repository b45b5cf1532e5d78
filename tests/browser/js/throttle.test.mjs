// node --test: the CPU throttle's arithmetic (static/js/worker/throttle.js).
import test from "node:test";
import assert from "node:assert/strict";
import { restMs, toDuty, MIN_DUTY } from "../../../static/js/worker/throttle.js";

test("a duty cycle from a percentage or a fraction, clamped", () => {
  assert.equal(toDuty(50), 0.5);
  assert.equal(toDuty(0.25), 0.25);
  assert.equal(toDuty(100), 1);
  assert.equal(toDuty(250), 1);
  assert.equal(toDuty(1), 1);
  assert.equal(toDuty(0), 1); // nonsense means "no throttle", never "never work"
  assert.equal(toDuty("abc"), 1);
  assert.equal(toDuty(1e-9), MIN_DUTY);
});

test("rest after a task keeps the busy fraction at the duty cycle", () => {
  assert.equal(restMs(100, 50), 100);
  assert.equal(restMs(100, 25), 300);
  assert.equal(restMs(100, 100), 0);
  assert.equal(restMs(0, 50), 0);
  for (const duty of [10, 30, 50, 75, 90]) {
    const ran = 123;
    const rest = restMs(ran, duty);
    assert.ok(Math.abs(ran / (ran + rest) - duty / 100) < 1e-12);
  }
});
