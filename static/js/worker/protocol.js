// The worker protocol (docs/protocol.md; workers/protocol.py declares every message) from the browser: msgpack frames over a WebSocket
// to /ws/work/, or, when the socket cannot be opened, the same messages POSTed to
// /api/v1/work (the HTTP fallback, with long polling while waiting for work).
//
// A Connection delivers every message from the server to onMessage(msg) and reports
// onState("connecting" | "open" | "closed", detail); a frame that cannot be decoded is
// reported to onBadFrame(detail) (never dropped silently). It does not interpret the protocol
// beyond the welcome (whose session and secret the HTTP fallback needs).

import { encode, decode } from "../../vendor/msgpack/index.mjs";

export const VERSION = 2;
const OPEN_TIMEOUT_MS = 5000;
const HTTP_RETRY_MS = [1000, 2000, 5000, 10000, 20000];
// The server closes an HTTP-fallback session it has not heard from for two long polls (20 s):
// with nothing else to send, ping well within one (workers/sessions.py HTTP_HEARTBEAT_SECONDS).
const HTTP_PING_MS = 8000;

function mapHeader(size) {
  if (size < 16) return Uint8Array.of(0x80 | size);
  if (size < 0x10000) return Uint8Array.of(0xde, size >> 8, size & 0xff);
  return Uint8Array.of(0xdf, size >>> 24, (size >> 16) & 0xff, (size >> 8) & 0xff, size & 0xff);
}

function join(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function packValue(value) {
  if (!(value instanceof Map)) return encode(value);
  const parts = [mapHeader(value.size)];
  for (const [k, v] of value) parts.push(encode(k), packValue(v));
  return join(parts);
}

/** A message as a msgpack frame. A Map value (at the top level) keeps its keys' types: the
 * protocol maps integer lease ids in "progress", which plain objects would turn into strings. */
export function pack(message) {
  const entries = Object.entries(message).filter(([, v]) => v !== undefined);
  if (!entries.some(([, v]) => v instanceof Map)) return encode(message);
  const parts = [mapHeader(entries.length)];
  for (const [k, v] of entries) parts.push(encode(k), packValue(v));
  return join(parts);
}

/** @param {Uint8Array} bytes @returns {any} a message (checked by its reader) */
export function unpack(bytes) {
  return decode(bytes, { maxStrLength: 16 << 20, maxBinLength: 16 << 20, maxArrayLength: 4096, maxMapLength: 4096 });
}

function socketUrl(base) {
  const url = new URL("/ws/work/", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** The WebSocket transport. open() resolves true when the socket opened, false otherwise. */
export class SocketTransport {
  /**
   * @param {string} base
   * @param {(msg: any) => void} onMessage
   * @param {(detail: string) => void} onClose
   * @param {(detail: string) => void} [onBadFrame]
   */
  constructor(base, onMessage, onClose, onBadFrame = reportBadFrame) {
    this.base = base;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.onBadFrame = onBadFrame;
    this.ws = null;
    this.name = "websocket";
  }

  open() {
    return new Promise((resolve) => {
      let settled = false;
      let timer = null;
      const settle = (ok) => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          resolve(ok);
        }
      };
      let ws;
      try {
        ws = new WebSocket(socketUrl(this.base));
      } catch {
        settle(false);
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      timer = setTimeout(() => {
        settle(false);
        ws.close();
      }, OPEN_TIMEOUT_MS);
      ws.onopen = () => settle(true);
      ws.onmessage = (event) => {
        if (typeof event.data === "string") {
          this.onBadFrame("a text frame (the protocol sends binary msgpack only)");
          return;
        }
        let msg;
        try {
          msg = unpack(new Uint8Array(event.data));
        } catch (exc) {
          this.onBadFrame(`an undecodable frame (${exc instanceof Error ? exc.message : exc})`);
          return;
        }
        if (msg === null || typeof msg !== "object" || typeof msg.t !== "string") {
          this.onBadFrame("a frame that is not a message (a map with a string t)");
          return;
        }
        this.onMessage(msg);
      };
      ws.onclose = (event) => {
        if (!settled) {
          settle(false);
          return;
        }
        if (this.ws === ws) {
          this.ws = null;
          this.onClose(`socket closed (${event.code})`);
        }
      };
      ws.onerror = () => settle(false);
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(pack(message));
  }

  close() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  }
}

/**
 * The HTTP fallback. Two loops, each with at most one request in flight:
 *
 * - the send loop POSTs queued messages (hello, results, checkpoints, metrics...) in batches.
 *   It never carries a `want`, so the server answers it at once;
 * - the poll loop asks for tasks while the harness is hungry (hungry() > 0). The server holds
 *   such a request up to 10 s until tasks appear (long polling), which is how an HTTP worker
 *   waits for work without polling in a tight loop; results meanwhile leave on the send loop.
 */
export class HttpTransport {
  /**
   * @param {string} base
   * @param {(msg: any) => void} onMessage
   * @param {(detail: string) => void} onClose
   * @param {() => number} hungry
   * @param {(detail: string) => void} [onBadFrame]
   */
  constructor(base, onMessage, onClose, hungry, onBadFrame = reportBadFrame) {
    this.onBadFrame = onBadFrame;
    this.base = base;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.hungry = hungry;
    this.outbox = [];
    this.session = null;
    this.secret = null;
    this.closed = false;
    this.failures = 0;
    this.wakeSender = null;
    this.wakePoller = null;
    this.name = "http";
  }

  open() {
    this.closed = false;
    this._sendLoop();
    this._pollLoop();
    return Promise.resolve(true);
  }

  send(message) {
    if (message.t === "want") {
      this._wake("wakePoller");
      return;
    }
    if (message.t === "result" && "want" in message) {
      const { want, ...rest } = message;
      message = rest;
      this._wake("wakePoller");
    }
    this.outbox.push(message);
    this._wake("wakeSender");
  }

  _wake(which) {
    const wake = this[which];
    if (wake) {
      this[which] = null;
      wake();
    }
  }

  _sleep(which, ms) {
    return new Promise((resolve) => {
      this[which] = resolve;
      setTimeout(resolve, ms);
    }).then(() => {
      this[which] = null;
    });
  }

  async _post(messages) {
    const body = pack({ session: this.session, secret: this.secret, messages });
    try {
      const response = await fetch(new URL("/api/v1/work", this.base), {
        method: "POST",
        body,
        headers: { "Content-Type": "application/msgpack" },
        credentials: "same-origin",
      });
      const bytes = new Uint8Array(await response.arrayBuffer());
      let replies;
      try {
        replies = unpack(bytes).messages || [];
      } catch (exc) {
        // A proxy's error page, a truncated body: reported, and retried like a network error.
        this.onBadFrame(`an undecodable HTTP answer (${response.status}: ${exc instanceof Error ? exc.message : exc})`);
        throw exc;
      }
      this.failures = 0;
      return replies;
    } catch {
      this.failures += 1;
      if (this.failures > 8 && !this.closed) {
        this.closed = true;
        this.onClose("the server cannot be reached");
      }
      return null;
    }
  }

  _deliver(replies) {
    for (const msg of replies) {
      if (this.closed) return;
      if (msg.t === "welcome") {
        this.session = msg.session;
        this.secret = msg.secret;
        this._wake("wakePoller");
      }
      if (msg.t === "error" && msg.code === "session") {
        this.closed = true;
        this.onClose("the session expired");
        return;
      }
      this.onMessage(msg);
    }
  }

  async _backoff() {
    // Jittered like reconnects (backoff.js): requests that failed together retry apart.
    const ceiling = HTTP_RETRY_MS[Math.min(this.failures, HTTP_RETRY_MS.length) - 1];
    await new Promise((resolve) => setTimeout(resolve, ceiling * (0.5 + 0.5 * Math.random())));
  }

  async _sendLoop() {
    while (!this.closed) {
      if (this.outbox.length === 0) {
        // Sleep until a message is queued; send a ping now and then to keep the session.
        await this._sleep("wakeSender", HTTP_PING_MS);
        if (this.outbox.length === 0 && this.session !== null && !this.closed) this.outbox.push({ t: "ping" });
        continue;
      }
      const messages = this.outbox.splice(0, 64);
      const replies = await this._post(messages);
      if (replies === null) {
        this.outbox.unshift(...messages);
        await this._backoff();
        continue;
      }
      this._deliver(replies);
    }
  }

  async _pollLoop() {
    while (!this.closed) {
      const want = this.session === null ? 0 : this.hungry();
      if (want <= 0) {
        await this._sleep("wakePoller", 15000);
        continue;
      }
      const replies = await this._post([{ t: "want", n: want }]);
      if (replies === null) {
        await this._backoff();
        continue;
      }
      this._deliver(replies);
    }
  }

  close() {
    this.closed = true;
    this._wake("wakeSender");
    this._wake("wakePoller");
  }
}

/** Where undecodable frames are reported unless the caller says otherwise. @param {string} detail */
function reportBadFrame(detail) {
  console.warn(`ccgsc worker: ignored ${detail}`);
}

export class Connection {
  /**
   * base: the platform's origin; onMessage(msg); onState(state, detail);
   * hungry(): how many tasks the harness would take now (for HTTP long polls);
   * transport: "auto" (WebSocket, else HTTP), "websocket" or "http";
   * onBadFrame(detail): a frame from the server that could not be decoded.
   * @param {{
   *   base: string,
   *   onMessage: (msg: any) => void,
   *   onState: (state: string, detail: string) => void,
   *   hungry: () => number,
   *   transport?: string,
   *   onBadFrame?: (detail: string) => void,
   * }} options
   */
  constructor({ base, onMessage, onState, hungry, transport = "auto", onBadFrame = reportBadFrame }) {
    this.onBadFrame = onBadFrame;
    this.base = base;
    this.onMessage = onMessage;
    this.onState = onState;
    this.hungry = hungry;
    this.preferred = transport;
    this.transport = null;
    this.opened = null; // the name of the transport that opened (kept after it closed)
  }

  get transportName() {
    return this.transport ? this.transport.name : null;
  }

  async open() {
    this.onState("connecting", "");
    const closed = (detail) => {
      this.transport = null;
      this.onState("closed", detail);
    };
    if (this.preferred !== "http") {
      const socket = new SocketTransport(this.base, this.onMessage, closed, this.onBadFrame);
      if (await socket.open()) {
        this.transport = socket;
        this.opened = "websocket";
        this.onState("open", "websocket");
        return true;
      }
      if (this.preferred === "websocket") {
        closed("the WebSocket could not be opened");
        return false;
      }
    }
    const http = new HttpTransport(this.base, this.onMessage, closed, this.hungry, this.onBadFrame);
    this.transport = http;
    this.opened = "http";
    await http.open();
    this.onState("open", "http");
    return true;
  }

  send(message) {
    if (this.transport) this.transport.send(message);
  }

  close() {
    const transport = this.transport;
    this.transport = null;
    if (transport) transport.close();
  }
}
