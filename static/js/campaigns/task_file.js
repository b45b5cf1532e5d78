// Checks a task file in the browser before it is uploaded, with the same rules as the server
// (campaigns/inputs.py): a bad line is reported at once instead of after the upload and a page
// reload. The server checks again; this only saves the round trip.

import { decodeMulti } from "../../vendor/msgpack/index.mjs";

const FIELDS = new Set(["input", "input_b64", "args", "env"]);

/** The task file's format from its name, as campaigns.inputs.guess_format decides.
 * @param {string} name
 * @returns {"msgpack" | "text" | "jsonl"} */
export function formatOf(name) {
  if (/\.(msgpack|mpk|msgpck)$/i.test(name)) return "msgpack";
  if (/\.txt$/i.test(name)) return "text";
  return "jsonl";
}

/** @param {unknown} value */
function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/**
 * Why one decoded task cannot be a task, or null when it can.
 * @param {unknown} task
 * @param {string} where e.g. "line 3"
 * @param {number} maxInput the task input limit in bytes
 * @returns {string | null}
 */
export function taskProblem(task, where, maxInput) {
  let size;
  if (typeof task === "string") size = new TextEncoder().encode(task).length;
  else if (task instanceof Uint8Array) size = task.length;
  else if (isPlainObject(task)) {
    const object = /** @type {Record<string, unknown>} */ (task);
    const unknown = Object.keys(object).filter((key) => !FIELDS.has(key));
    if (unknown.length) return `${where}: unknown field(s) ${unknown.sort().join(", ")}`;
    if ("input" in object && "input_b64" in object) {
      return `${where}: give only one of \`input\` and \`input_b64\``;
    }
    if (!Object.keys(object).length) {
      return `${where}: a task needs \`input\`, \`input_b64\`, \`args\` or \`env\``;
    }
    // An object without an input is a whole task with an empty input ({"args": ["8"]}).
    if (!("input" in object) && !("input_b64" in object)) size = 0;
    else if ("input_b64" in object) {
      const text = object.input_b64;
      if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
        return `${where}: \`input_b64\` is not valid base64`;
      }
      size = (text.length / 4) * 3 - (text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0);
    } else if (typeof object.input === "string") size = new TextEncoder().encode(object.input).length;
    else if (object.input instanceof Uint8Array) size = object.input.length;
    else return `${where}: \`input\` must be a string (or bytes in msgpack)`;
    if ("args" in object) {
      const args = object.args;
      if (!Array.isArray(args)) return `${where}: args must be a list of strings, like ["-n", "5"]`;
      const bad = args.findIndex((arg) => typeof arg !== "string" || arg.includes("\0"));
      if (bad >= 0) return `${where}: args[${bad}]: not a valid string`;
    }
    if ("env" in object) {
      const env = object.env;
      if (!isPlainObject(env)) {
        return `${where}: env must map variable names to strings, like {"MODE": "fast"}`;
      }
      for (const [name, value] of Object.entries(/** @type {object} */ (env))) {
        if (!name || name.includes("=") || name.includes("\0")) {
          return `${where}: env: ${JSON.stringify(name)} cannot be a variable name`;
        }
        if (typeof value !== "string" || value.includes("\0")) {
          return `${where}: env[${JSON.stringify(name)}]: not a valid string`;
        }
      }
    }
  } else return `${where}: a task is a string or an object with \`input\``;
  if (size > maxInput) return `${where}: input is ${size} bytes, above the ${maxInput}-byte limit`;
  return null;
}

/**
 * Why a whole task file cannot be used, or null when every task in it is fine.
 * @param {Uint8Array} bytes the file's contents
 * @param {{format: "msgpack" | "text" | "jsonl", maxInput: number}} options
 * @returns {string | null}
 */
export function taskFileProblem(bytes, { format, maxInput }) {
  let count = 0;
  if (format === "text") {
    // Each line's bytes are one task's input (campaigns.inputs.iter_text).
    let start = 0;
    let number = 0;
    while (start < bytes.length) {
      let end = bytes.indexOf(10, start);
      if (end < 0) end = bytes.length;
      number += 1;
      const length = end - start - (end > start && bytes[end - 1] === 13 ? 1 : 0);
      if (length > maxInput) {
        return `line ${number}: input is ${length} bytes, above the ${maxInput}-byte limit`;
      }
      if (length > 0) count += 1;
      start = end + 1;
    }
  } else if (format === "msgpack") {
    try {
      for (const task of decodeMulti(bytes)) {
        count += 1;
        const problem = taskProblem(task, `object ${count}`, maxInput);
        if (problem) return problem;
      }
    } catch (error) {
      return `object ${count + 1}: not valid msgpack (${error instanceof Error ? error.message : error})`;
    }
  } else {
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return "the file is not UTF-8 text: JSON Lines files are text (name it .msgpack for msgpack)";
    }
    const lines = text.split("\n");
    for (let index = 0; index < lines.length; index += 1) {
      const line = lines[index].trim();
      if (!line) continue;
      count += 1;
      let task;
      try {
        task = JSON.parse(line);
      } catch (error) {
        return `line ${index + 1}: not valid JSON (${error instanceof Error ? error.message : error})`;
      }
      const problem = taskProblem(task, `line ${index + 1}`, maxInput);
      if (problem) return problem;
    }
  }
  return count === 0 ? "the file holds no tasks" : null;
}
