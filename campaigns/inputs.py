"""Parsers for the three ways tasks arrive, all streaming in constant memory.

- generator output: frames of a 4-byte little-endian length followed by that many bytes;
- task files: JSON Lines or a msgpack stream, one task per line/object, or plain text, where
  each line is one task's input.

Each yields TaskSpec values and raises InputError with the position of the first bad item.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import msgpack

FRAME_HEADER = struct.Struct("<I")
READ_CHUNK = 1 << 20


class InputError(ValueError):
    """A task source is malformed; the message says where and why."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    input: bytes
    args: list[str] | None = None
    env: dict[str, str] | None = None


# --- arguments and environment ------------------------------------------------------------------
# The one check of kernel arguments and environments, wherever they come from: the campaign
# services (web form and API alike), task files and task streams. The kernel host passes them
# to the kernel as C strings and NAME=value pairs, so a NUL anywhere, or a "=" or nothing in a
# name, could not reach the kernel intact. Messages name the item at fault, as in `args[1]`.


def env_name_problem(name: str) -> str | None:
    """Why `name` cannot be an environment variable's name, or None if it can."""
    if not name:
        return "a variable name cannot be empty"
    if "=" in name:
        return f'{json.dumps(name)} cannot be a variable name: it contains "="'
    if "\0" in name:
        return f"{json.dumps(name)} cannot be a variable name: it contains a NUL character"
    return None


def args_problem(args: Any, field: str = "args") -> str | None:
    """Why `args` cannot be a kernel's arguments (a list of strings without NUL), or None."""
    if not isinstance(args, list):
        return f'{field} must be a list of strings, like ["-n", "5"]'
    for index, arg in enumerate(args):
        if not isinstance(arg, str):
            return f"{field}[{index}]: not a valid string"
        if "\0" in arg:
            return f"{field}[{index}]: contains a NUL character"
    return None


def env_problem(env: Any, field: str = "env") -> str | None:
    """Why `env` cannot be a kernel's environment (a map of valid names to strings without NUL),
    or None."""
    if not isinstance(env, dict):
        return f'{field} must map variable names to strings, like {{"MODE": "fast"}}'
    for name, value in env.items():
        if not isinstance(name, str):
            return f"{field}: the variable name {name!r} is not a string"
        problem = env_name_problem(name)
        if problem is not None:
            return f"{field}: {problem}"
        if not isinstance(value, str):
            return f"{field}[{json.dumps(name)}]: not a valid string"
        if "\0" in value:
            return f"{field}[{json.dumps(name)}]: contains a NUL character"
    return None


def iter_frames(stream: IO[bytes], *, max_input: int) -> Iterator[TaskSpec]:
    """Tasks from a generator's stdout: <u32 LE length><bytes>, repeated to end of stream."""
    index = 0
    while True:
        header = stream.read(FRAME_HEADER.size)
        if not header:
            return
        if len(header) < FRAME_HEADER.size:
            raise InputError(f"generator output ends inside the length of task {index}")
        (length,) = FRAME_HEADER.unpack(header)
        if length > max_input:
            raise InputError(
                f"task {index} is {length} bytes, above the {max_input}-byte task input limit"
            )
        data = stream.read(length)
        if len(data) < length:
            raise InputError(f"generator output ends inside task {index} ({len(data)}/{length})")
        yield TaskSpec(input=data)
        index += 1


def _spec_from_object(obj: Any, where: str, max_input: int) -> TaskSpec:  # noqa: C901 (one check per task-file field, in order; splitting scatters the format)
    """One task from a decoded JSON/msgpack value: bytes or text (the input itself), or a map
    with `input` (text/bytes) or `input_b64`, optional `args` (list of strings), `env` (map).
    A map without an input has an empty input, so `{"args": ["8"]}` is a whole task; it must
    then give `args` or `env` (an empty map is more likely a mistake than a task)."""
    args: list[str] | None = None
    env: dict[str, str] | None = None
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode()
    elif isinstance(obj, dict):
        unknown = set(obj) - {"input", "input_b64", "args", "env"}
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        if "input" in obj and "input_b64" in obj:
            raise InputError(f"{where}: give only one of `input` and `input_b64`")
        if not obj.keys() & {"input", "input_b64", "args", "env"}:
            raise InputError(f"{where}: a task needs `input`, `input_b64`, `args` or `env`")
        if "input" not in obj and "input_b64" not in obj:
            data = b""
        elif "input_b64" in obj:
            if not isinstance(obj["input_b64"], str):
                raise InputError(f"{where}: `input_b64` must be a base64 string")
            try:
                data = base64.b64decode(obj["input_b64"], validate=True)
            except (binascii.Error, ValueError):
                raise InputError(f"{where}: `input_b64` is not valid base64") from None
        elif isinstance(obj["input"], bytes):
            data = obj["input"]
        elif isinstance(obj["input"], str):
            data = obj["input"].encode()
        else:
            raise InputError(f"{where}: `input` must be a string (or bytes in msgpack)")
        if "args" in obj:
            args = obj["args"]
            problem = args_problem(args)
            if problem is not None:
                raise InputError(f"{where}: {problem}")
        if "env" in obj:
            env = obj["env"]
            problem = env_problem(env)
            if problem is not None:
                raise InputError(f"{where}: {problem}")
    else:
        raise InputError(f"{where}: a task is a string or an object with `input`")
    if len(data) > max_input:
        raise InputError(f"{where}: input is {len(data)} bytes, above the {max_input}-byte limit")
    return TaskSpec(input=data, args=args, env=env)


def iter_jsonl(stream: IO[bytes], *, max_input: int) -> Iterator[TaskSpec]:
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"line {number}: not valid JSON ({exc})") from None
        except RecursionError:
            raise InputError(f"line {number}: not valid JSON (nested too deeply)") from None
        yield _spec_from_object(obj, f"line {number}", max_input)


def iter_msgpack(stream: IO[bytes], *, max_input: int) -> Iterator[TaskSpec]:
    unpacker = msgpack.Unpacker(
        raw=False, max_buffer_size=max(4 * max_input, READ_CHUNK * 4), strict_map_key=False
    )
    number = fed = complete = 0
    while chunk := stream.read(READ_CHUNK):
        unpacker.feed(chunk)
        fed += len(chunk)
        try:
            for obj in unpacker:
                number += 1
                complete = unpacker.tell()  # offset just past the last whole object
                yield _spec_from_object(obj, f"object {number}", max_input)
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"object {number + 1}: not valid msgpack ({exc})") from None
    # Bytes left in the buffer mean the stream stopped in the middle of an object.
    if complete != fed:
        raise InputError(f"object {number + 1}: the stream ends in the middle of an object")


def iter_text(stream: IO[bytes], *, max_input: int) -> Iterator[TaskSpec]:
    """Plain text: each line is one task's input, exactly its bytes without the line ending
    ("\n" or "\r\n"; other whitespace is kept). Empty lines are skipped. No args or env."""
    for number, raw in enumerate(stream, start=1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if len(line) > max_input:
            raise InputError(
                f"line {number}: input is {len(line)} bytes, above the {max_input}-byte limit"
            )
        yield TaskSpec(input=bytes(line))


TASK_FILE_FORMATS = ("jsonl", "msgpack", "text")


def iter_task_file(stream: IO[bytes], *, fmt: str, max_input: int) -> Iterator[TaskSpec]:
    if fmt == "jsonl":
        return iter_jsonl(stream, max_input=max_input)
    if fmt == "msgpack":
        return iter_msgpack(stream, max_input=max_input)
    if fmt == "text":
        return iter_text(stream, max_input=max_input)
    raise InputError(f"unknown task file format {fmt!r}: use jsonl, msgpack or text")


def guess_format(filename: str) -> str:
    """msgpack for .msgpack/.mpk, text for .txt, JSON Lines otherwise."""
    name = filename.lower()
    if name.endswith((".msgpack", ".mpk", ".msgpck")):
        return "msgpack"
    if name.endswith(".txt"):
        return "text"
    return "jsonl"
