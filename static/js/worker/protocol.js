// The worker protocol v1 (docs/protocol.md) from the browser: msgpack frames over a WebSocket
// to /ws/work/, or, when the socket cannot be opened, the same messages POSTed to
// /api/v1/work (the HTTP fallback, with long polling while waiting for work).
//
// A Connection delivers every message from the server to onMessage(msg) and reports
// onState("connecting" | "open" | "closed", detail). It does not interpret the protocol
// beyond the welcome (whose session and secret the HTTP fallback needs).

import { encode, decode } from "../../vendor/msgpack/index.mjs";

export const VERSION = 1;
const OPEN_TIMEOUT_MS = 5000;
const HTTP_RETRY_MS = [1000, 2000, 5000, 10000, 20000];

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

export function unpack(bytes) {
  return decode(bytes, { maxStrLength: 16 << 20, maxBinLength: 16 << 20, maxArrayLength: 4096, maxMapLength: 4096 });
}

function socketUrl(base) {
  const url = new URL("/ws/work/", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** The WebSocket transport. open() resolves true when the socket opened, false otherwise. */
class SocketTransport {
  constructor(base, onMessage, onClose) {
    this.base = base;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.ws = null;
    this.name = "websocket";
  }

  open() {
    return new Promise((resolve) => {
      let settled = false;
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
      const timer = setTimeout(() => {
        settle(false);
        ws.close();
      }, OPEN_TIMEOUT_MS);
      ws.onopen = () => settle(true);
      ws.onmessage = (event) => {
        if (typeof event.data === "string") return;
        let msg;
        try {
          msg = unpack(new Uint8Array(event.data));
        } catch {
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
 * The HTTP fallback: messages are queued and POSTed in batches, one request in flight at a
 * time. While the harness wants work (hungry()), an otherwise empty request carries a `want`
 * and the server holds it up to 10 s until tasks appear (long polling).
 */
class HttpTransport {
  constructor(base, onMessage, onClose, hungry) {
    this.base = base;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.hungry = hungry;
    this.outbox = [];
    this.session = null;
    this.secret = null;
    this.closed = false;
    this.inFlight = false;
    this.failures = 0;
    this.wake = null;
    this.name = "http";
  }

  open() {
    this.closed = false;
    this._loop();
    return Promise.resolve(true);
  }

  send(message) {
    if (message.t === "want") {
      // One outstanding want is enough; the latest count wins.
      this.outbox = this.outbox.filter((m) => m.t !== "want");
    }
    this.outbox.push(message);
    this._poke();
  }

  _poke() {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  async _loop() {
    while (!this.closed) {
      if (this.outbox.length === 0) {
        const want = this.hungry();
        if (want > 0 && this.session !== null) {
          this.outbox.push({ t: "want", n: want });
        } else {
          // Sleep until a message is queued, or send a ping now and then to stay alive.
          await new Promise((resolve) => {
            this.wake = resolve;
            setTimeout(resolve, 15000);
          });
          this.wake = null;
          if (this.outbox.length === 0 && this.session !== null && !this.closed) {
            this.outbox.push({ t: "ping" });
          }
          continue;
        }
      }
      const messages = this.outbox.splice(0, 64);
      const body = pack({ session: this.session, secret: this.secret, messages });
      let replies;
      try {
        const response = await fetch(new URL("/api/v1/work", this.base), {
          method: "POST",
          body,
          headers: { "Content-Type": "application/msgpack" },
          credentials: "same-origin",
        });
        replies = unpack(new Uint8Array(await response.arrayBuffer())).messages || [];
        this.failures = 0;
      } catch {
        // Network trouble: keep the messages and retry with backoff.
        this.outbox.unshift(...messages);
        const delay = HTTP_RETRY_MS[Math.min(this.failures++, HTTP_RETRY_MS.length - 1)];
        if (this.failures > 8) {
          this.closed = true;
          this.onClose("the server cannot be reached");
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
        continue;
      }
      for (const msg of replies) {
        if (msg.t === "welcome") {
          this.session = msg.session;
          this.secret = msg.secret;
        }
        if (msg.t === "error" && msg.code === "session") {
          this.closed = true;
          this.onClose("the session expired");
          return;
        }
        if (!this.closed) this.onMessage(msg);
      }
    }
  }

  close() {
    this.closed = true;
    this._poke();
  }
}

export class Connection {
  /**
   * base: the platform's origin; onMessage(msg); onState(state, detail);
   * hungry(): how many tasks the harness would take now (for HTTP long polls);
   * transport: "auto" (WebSocket, else HTTP), "websocket" or "http".
   */
  constructor({ base, onMessage, onState, hungry, transport = "auto" }) {
    this.base = base;
    this.onMessage = onMessage;
    this.onState = onState;
    this.hungry = hungry;
    this.preferred = transport;
    this.transport = null;
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
      const socket = new SocketTransport(this.base, this.onMessage, closed);
      if (await socket.open()) {
        this.transport = socket;
        this.onState("open", "websocket");
        return true;
      }
      if (this.preferred === "websocket") {
        closed("the WebSocket could not be opened");
        return false;
      }
    }
    const http = new HttpTransport(this.base, this.onMessage, closed, this.hungry);
    this.transport = http;
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
