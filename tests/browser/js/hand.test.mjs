// node --test: a hand's workers (static/js/worker/hand.js) against a fake Worker that answers
// at once: a GPU worker is set aside, not ended, while the hand runs other kinds, and taken back
// for the next GPU task; a timed-out task ends its own worker only.
import test from "node:test";
import assert from "node:assert/strict";

class FakeWorker {
  static all = [];
  static hangNext = false; // the next run never answers (a kernel past its limit)
  constructor(url) {
    this.url = url;
    this.terminated = false;
    this.runs = 0;
    FakeWorker.all.push(this);
    queueMicrotask(() => this.onmessage?.({ data: { t: "ready" } }));
  }
  postMessage(msg) {
    if (msg.t !== "run") return;
    this.runs += 1;
    if (FakeWorker.hangNext) return;
    const result = { exit_code: 0, error: null, message: "", stdout: new Uint8Array([this.runs]), stderr: new Uint8Array(), ms: 1 };
    queueMicrotask(() => this.onmessage?.({ data: { t: "done", id: msg.id, result } }));
  }
  terminate() {
    this.terminated = true;
  }
}
globalThis.Worker = FakeWorker;
const { Hand } = await import("../../../static/js/worker/hand.js");

const URLS = { wasm: "/worker/wasm.js", js: "/worker/js.js", gpu: "/worker/gpu.js" };
const job = (kind, timeout_s = 60) => ({ kind, task: {}, limits: { timeout_s }, static: null });
const alive = (url) => FakeWorker.all.filter((w) => w.url === url && !w.terminated);

test("a GPU worker waits aside while the hand runs CPU tasks, and serves the next GPU task", async () => {
  FakeWorker.all = [];
  const hand = new Hand(0, URLS);
  assert.equal((await hand.run(job("gpu"))).error, null);
  await hand.run(job("wasm"));
  await hand.run(job("js"));
  const again = await hand.run(job("gpu"));
  assert.deepEqual([...again.stdout], [2]); // the same GPU worker's second run
  assert.equal(FakeWorker.all.filter((w) => w.url === URLS.gpu).length, 1);
  assert.equal(alive(URLS.gpu).length, 1);
  assert.equal(alive(URLS.wasm).length + alive(URLS.js).length, 0); // ended, not kept
  hand.dispose();
  assert.equal(FakeWorker.all.filter((w) => !w.terminated).length, 0);
});

test("a GPU task past its limit ends the GPU worker; the next gets a new one", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  FakeWorker.all = [];
  const hand = new Hand(0, URLS);
  await hand.run(job("gpu"));
  await hand.run(job("wasm")); // the GPU worker waits aside
  FakeWorker.hangNext = true;
  const late = hand.run(job("gpu", 1));
  await new Promise((resolve) => setImmediate(resolve)); // handed over, timer set
  FakeWorker.hangNext = false;
  t.mock.timers.tick(1000);
  assert.equal((await late).error, "timeout");
  assert.equal(alive(URLS.gpu).length, 0); // terminated: its device is abandoned
  const next = await hand.run(job("gpu"));
  assert.deepEqual([next.error, ...next.stdout], [null, 1]); // a fresh worker's first run
  assert.equal(FakeWorker.all.filter((w) => w.url === URLS.gpu).length, 2);
  hand.dispose();
});
