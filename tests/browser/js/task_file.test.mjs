// The create form's task-file check (static/js/campaigns/task_file.js) follows the server's
// rules (campaigns/inputs.py): the same files pass and fail, with the same line numbers.
import { test } from "node:test";
import assert from "node:assert/strict";

import { encode } from "../../../static/vendor/msgpack/index.mjs";
import { formatOf, taskFileProblem } from "../../../static/js/campaigns/task_file.js";

const text = (s) => new TextEncoder().encode(s);
const jsonl = (s, maxInput = 1024) => taskFileProblem(text(s), { format: "jsonl", maxInput });

test("the format follows the file name as on the server", () => {
  assert.equal(formatOf("tasks.MSGPACK"), "msgpack");
  assert.equal(formatOf("a.mpk"), "msgpack");
  assert.equal(formatOf("lines.txt"), "text");
  assert.equal(formatOf("tasks.jsonl"), "jsonl");
  assert.equal(formatOf("tasks"), "jsonl");
});

test("good JSON Lines pass", () => {
  assert.equal(jsonl('"1"\n\n{"input": "2", "args": ["-n", "3"], "env": {"A": "b"}}\n{"args": ["8"]}\n{"input_b64": "AAE="}\n'), null);
});

test("bad JSON Lines name the line and the problem", () => {
  assert.equal(jsonl('"1"\n{"input": "2", "colour": "red"}'), "line 2: unknown field(s) colour");
  assert.match(jsonl('"1"\n{nope'), /^line 2: not valid JSON/);
  assert.equal(jsonl("{}"), "line 1: a task needs `input`, `input_b64`, `args` or `env`");
  assert.equal(jsonl('{"input": "a", "input_b64": "AA=="}'), "line 1: give only one of `input` and `input_b64`");
  assert.equal(jsonl('{"input_b64": "!!"}'), "line 1: `input_b64` is not valid base64");
  assert.equal(jsonl('{"input": 5}'), "line 1: `input` must be a string (or bytes in msgpack)");
  assert.equal(jsonl('{"args": "-n 5"}'), 'line 1: args must be a list of strings, like ["-n", "5"]');
  assert.equal(jsonl('{"args": ["a", 1]}'), "line 1: args[1]: not a valid string");
  assert.equal(jsonl('{"env": {"A=B": "c"}}'), 'line 1: env: "A=B" cannot be a variable name');
  assert.equal(jsonl("5"), "line 1: a task is a string or an object with `input`");
  assert.equal(jsonl('"abcdef"', 4), "line 1: input is 6 bytes, above the 4-byte limit");
  assert.equal(jsonl("\n \n"), "the file holds no tasks");
});

test("msgpack and plain text files are checked too", () => {
  const good = new Uint8Array([...encode("a"), ...encode({ input: new Uint8Array([1, 2]) })]);
  assert.equal(taskFileProblem(good, { format: "msgpack", maxInput: 16 }), null);
  const bad = new Uint8Array([...encode("a"), ...encode({ input: 3 })]);
  assert.equal(taskFileProblem(bad, { format: "msgpack", maxInput: 16 }), "object 2: `input` must be a string (or bytes in msgpack)");
  assert.match(taskFileProblem(new Uint8Array([0xc1]), { format: "msgpack", maxInput: 16 }), /^object 1: not valid msgpack/);
  assert.equal(taskFileProblem(text("12\r\n\n345\n"), { format: "text", maxInput: 3 }), null);
  assert.equal(taskFileProblem(text("12\n3456\n"), { format: "text", maxInput: 3 }), "line 2: input is 4 bytes, above the 3-byte limit");
});
