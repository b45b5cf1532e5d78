// node --test: the harness's session logic (static/js/worker/harness.js) against a fake
// WebSocket and fetch, with mocked timers: reconnecting, the switch to the HTTP fallback, and
// how much work it asks for.
import test from "node:test";
import assert from "node:assert/strict";
import { pack, unpack } from "../../../static/js/worker/protocol.js";

class FakeSocket {
  static OPEN = 1;
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }
  send(bytes) {
    this.sent.push(unpack(bytes));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = FakeSocket.OPEN;
    this.onopen();
  }
  deliver(message) {
    this.onmessage({ data: pack(message).slice().buffer });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose({ code });
  }
}

class FakeWorker {
  postMessage() {}
  terminate() {}
  addEventListener() {}
}

globalThis.WebSocket = FakeSocket;
globalThis.Worker = FakeWorker;
Object.defineProperty(globalThis, "navigator", {
  value: { hardwareConcurrency: 2, userAgent: "node-test" },
  configurable: true,
});
const { Harness } = await import("../../../static/js/worker/harness.js");

const WELCOME = { t: "welcome", v: 2, session: 5, secret: "s", limits: { heartbeat: 20 } };

async function settle() {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

async function newSocket(count) {
  for (let i = 0; i < 50 && FakeSocket.all.length < count; i++) await settle();
  assert.equal(FakeSocket.all.length, count, `socket ${count} opened`);
  return FakeSocket.all[count - 1];
}

test("a lost socket is reopened after the backoff and the session starts afresh", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  FakeSocket.all = [];
  const harness = new Harness({ base: "http://platform.test", hands: 2, transport: "websocket" });
  harness.start();
  const first = await newSocket(1);
  first.open();
  await settle();
  assert.deepEqual(
    first.sent.map((m) => m.t),
    ["hello"],
  );
  assert.equal(first.sent[0].v, 2);
  first.deliver(WELCOME);
  await settle();
  // Welcomed: it asks for work at once.
  assert.deepEqual(first.sent[1], { t: "want", n: 256 });
  first.deliver({ t: "tasks", tasks: [] });
  first.drop();
  await settle();
  assert.equal(harness.state, "reconnecting");
  assert.equal(harness.session, null);
  assert.equal(FakeSocket.all.length, 1, "no reconnect before the backoff");
  t.mock.timers.tick(30000); // the longest first delay (2 s, jittered) is well within this
  const second = await newSocket(2);
  second.open();
  await settle();
  assert.equal(second.sent[0].t, "hello");
  second.deliver(WELCOME);
  await settle();
  assert.equal(harness.reconnects, 0, "a welcome resets the backoff");
  harness.stop();
});

test("sockets that die before the welcome twice make the harness use the HTTP fallback", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  FakeSocket.all = [];
  const posted = [];
  globalThis.fetch = async (url, init) => {
    posted.push({ url: String(url), body: unpack(new Uint8Array(init.body)) });
    return new Promise(() => {}); // the test only looks at what was sent
  };
  const harness = new Harness({ base: "http://platform.test", hands: 1 });
  harness.start();
  for (let n = 1; n <= 2; n++) {
    const socket = await newSocket(n);
    socket.open();
    await settle();
    socket.drop();
    await settle();
    t.mock.timers.tick(30000);
  }
  for (let i = 0; i < 50 && posted.length === 0; i++) await settle();
  assert.equal(FakeSocket.all.length, 2, "no third socket");
  assert.equal(posted[0].url, "http://platform.test/api/v1/work");
  assert.equal(posted[0].body.messages[0].t, "hello");
  assert.equal(harness.connection.transportName, "http");
  harness.stop();
});

test("the long poll asks for work only while fewer tasks than hands are in hand", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  FakeSocket.all = [];
  const harness = new Harness({ base: "http://platform.test", hands: 2, transport: "websocket" });
  assert.equal(harness._hungry(), 0, "nothing before a session");
  harness.start();
  const socket = await newSocket(1);
  socket.open();
  socket.deliver(WELCOME);
  await settle();
  assert.equal(harness._hungry(), 256);
  harness.queue = [{ lease: 1 }];
  assert.equal(harness._hungry(), 256, "one task for two hands: still hungry");
  harness.queue = [{ lease: 1 }, { lease: 2 }];
  assert.equal(harness._hungry(), 0, "a task per hand: the server is not asked");
  harness.queue = [];
  harness.pause("user");
  assert.equal(harness._hungry(), 0, "paused");
  harness.stop();
});

test("GPU tasks run one at a time; CPU tasks pass a GPU task that waits", async () => {
  const { nextRunnable } = await import("../../../static/js/worker/harness.js");
  const isGpu = (item) => item.gpu;
  const queue = [{ gpu: true }, { gpu: true }, { gpu: false }];
  assert.equal(nextRunnable(queue, false, isGpu), 0);
  assert.equal(nextRunnable(queue, true, isGpu), 2);
  assert.equal(nextRunnable(queue.slice(0, 2), true, isGpu), -1);
  assert.equal(nextRunnable([], false, isGpu), -1);
});
