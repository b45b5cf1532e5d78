// node --test: the harness's transports (static/js/worker/protocol.js) against fakes of the
// browser's WebSocket and fetch: the HTTP fallback's two loops, and undecodable frames.
import test from "node:test";
import assert from "node:assert/strict";
import { Connection, HttpTransport, SocketTransport, pack, unpack } from "../../../static/js/worker/protocol.js";

/** A fake WebSocket: the test drives open/message/close. */
class FakeSocket {
  static OPEN = 1;
  static last = null;
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.last = this;
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
  deliver(data) {
    this.onmessage({ data });
  }
}

/** A fake HTTP fallback server: records each request's body and answers from `answer`. */
function fakeFetch(answer) {
  const requests = [];
  const fetch = async (url, init) => {
    const body = unpack(new Uint8Array(init.body));
    requests.push(body);
    const reply = await answer(body, requests.length);
    if (reply instanceof Error) throw reply;
    const bytes = reply instanceof Uint8Array ? reply : pack({ messages: reply });
    return { status: 200, arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) };
  };
  return { fetch, requests };
}

function until(check, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const look = () => {
      if (check()) resolve();
      else if (Date.now() - started > 2000) reject(new Error(`timed out waiting for ${what}`));
      else setImmediate(look);
    };
    look();
  });
}

test("a socket reports undecodable and text frames instead of dropping them", async () => {
  globalThis.WebSocket = FakeSocket;
  const got = [];
  const bad = [];
  const transport = new SocketTransport("http://platform.test", (m) => got.push(m), () => {}, (d) => bad.push(d));
  const opened = transport.open();
  FakeSocket.last.open();
  assert.equal(await opened, true);
  assert.equal(FakeSocket.last.url, "ws://platform.test/ws/work/");
  FakeSocket.last.deliver(new Uint8Array([0xc1]).buffer);
  FakeSocket.last.deliver("hello");
  FakeSocket.last.deliver(pack([1, 2]).slice().buffer); // slice: a packed view shares a bigger buffer
  FakeSocket.last.deliver(pack({ t: "idle" }).slice().buffer);
  assert.deepEqual(got, [{ t: "idle" }]);
  assert.equal(bad.length, 3);
  assert.match(bad[0], /undecodable/);
  assert.match(bad[1], /text frame/);
  assert.match(bad[2], /not a message/);
});

test("the HTTP fallback sends the session with every request and long-polls only while hungry", async () => {
  let hungry = 0;
  const server = fakeFetch((body) => {
    const kinds = body.messages.map((m) => m.t);
    if (kinds.includes("hello")) return [{ t: "welcome", v: 2, session: 9, secret: "s3", limits: {} }];
    if (kinds.includes("want")) {
      hungry = 0; // what the harness would say once the tasks are queued
      return [{ t: "tasks", tasks: [{ lease: 1, task: 1, c: 1, in: new Uint8Array() }] }];
    }
    return [{ t: "ack", leases: [1], ignored: [] }];
  });
  globalThis.fetch = server.fetch;
  const got = [];
  const http = new HttpTransport("http://platform.test", (m) => got.push(m), () => {}, () => hungry);
  await http.open();
  http.send({ t: "hello", v: 2, kind: "browser", slots: 1 });
  await until(() => got.some((m) => m.t === "welcome"), "welcome");
  assert.equal(http.session, 9);
  // A want goes to the poll loop, not the outbox; the poll carries the session and secret.
  hungry = 3;
  http.send({ t: "want", n: 3 });
  await until(() => got.some((m) => m.t === "tasks"), "tasks");
  const poll = server.requests.find((r) => r.messages.some((m) => m.t === "want"));
  assert.deepEqual(poll, { session: 9, secret: "s3", messages: [{ t: "want", n: 3 }] });
  // A result's piggy-backed want is stripped: results leave on the send loop, answered at once.
  http.send({ t: "result", results: [{ lease: 1, ok: true, output: new Uint8Array([7]) }], want: 5 });
  await until(() => got.some((m) => m.t === "ack"), "ack");
  const results = server.requests.find((r) => r.messages.some((m) => m.t === "result"));
  assert.equal("want" in results.messages[0], false);
  http.close();
});

test("an undecodable HTTP answer is reported and retried, and the fallback gives up in the end", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const bad = [];
  let closed = null;
  const server = fakeFetch(() => new Uint8Array([0xc1]));
  globalThis.fetch = server.fetch;
  const http = new HttpTransport("http://platform.test", () => {}, (d) => (closed = d), () => 0, (d) => bad.push(d));
  await http.open();
  http.send({ t: "hello", v: 2, kind: "browser", slots: 1 });
  for (let i = 0; i < 20 && closed === null; i++) {
    await until(() => server.requests.length > i || closed !== null, `request ${i + 1}`);
    t.mock.timers.tick(20000); // the backoff between attempts
  }
  assert.equal(closed, "the server cannot be reached");
  assert.equal(bad.length, server.requests.length);
  assert.match(bad[0], /undecodable HTTP answer/);
  // Every attempt resent the same hello.
  assert.ok(server.requests.every((r) => r.messages[0].t === "hello"));
});

test("a Connection passes its onBadFrame to the socket it opens", async () => {
  globalThis.WebSocket = FakeSocket;
  const bad = [];
  const states = [];
  const connection = new Connection({
    base: "http://platform.test",
    transport: "websocket",
    onMessage: () => {},
    onState: (s) => states.push(s),
    hungry: () => 0,
    onBadFrame: (d) => bad.push(d),
  });
  const opened = connection.open();
  await until(() => FakeSocket.last && FakeSocket.last.onopen, "the socket");
  FakeSocket.last.open();
  assert.equal(await opened, true);
  FakeSocket.last.deliver(new Uint8Array([0xc1]).buffer);
  assert.equal(bad.length, 1);
  assert.deepEqual(states, ["connecting", "open"]);
});
