// node --test: msgpack frames of the worker protocol (static/js/worker/protocol.js).
import test from "node:test";
import assert from "node:assert/strict";
import { pack, unpack } from "../../../static/js/worker/protocol.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("bytes travel as msgpack bin, integers as integers, nil as nil", () => {
  const frame = pack({ t: "result", results: [{ lease: 7, ok: true, output: new Uint8Array([1, 2]), exit: null, ms: 3 }] });
  const back = unpack(frame);
  assert.equal(back.t, "result");
  assert.deepEqual(back.results[0].output, new Uint8Array([1, 2]));
  assert.equal(back.results[0].exit, null);
  assert.ok(hex(frame).includes("c4020102")); // bin 8, two bytes
});

test("a Map keeps integer keys (progress maps lease ids to fractions)", () => {
  const frame = pack({ t: "progress", p: new Map([[12, 0.5], [13, 1]]) });
  // {"t": "progress", "p": {12: 0.5, 13: 1}} exactly as Python's msgpack packs it.
  assert.equal(hex(frame), "82a174a870726f6772657373a170820ccb3fe00000000000000d01");
});
