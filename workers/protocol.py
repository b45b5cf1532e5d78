"""The worker protocol, version 1: message shapes, encoding and validation.

Plain Python (no Django): the server's consumer and HTTP fallback, the native worker and the
tests share it. Every frame is a msgpack map with a type key "t"; docs/protocol.md is the
reference. Decoding is size-limited and every message is validated into a plain dict before the
server uses it; anything unexpected raises ProtocolError with a code and a message for the peer.
"""

from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1
MAX_FRAME = 16 * 1024 * 1024  # a result batch may carry several MiB of outputs
MAX_BATCH = 256  # tasks in one frame, results in one frame
MAX_SLOTS = 256
MAX_STDERR = 4096


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def _unpack(frame: bytes, max_frame: int) -> Any:
    if len(frame) > max_frame:
        raise ProtocolError("too_large", f"frame of {len(frame)} bytes exceeds {max_frame}")
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=False,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=4 * MAX_BATCH,
            max_map_len=4 * MAX_BATCH,
            max_ext_len=0,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise ProtocolError("malformed", f"not a msgpack frame: {exc}") from None


def decode(frame: bytes, *, max_frame: int = MAX_FRAME) -> dict[str, Any]:
    """A frame as a dict with a string "t"; ProtocolError for anything else."""
    message = _unpack(frame, max_frame)
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("malformed", "a message is a map with a string type 't'")
    return message


# --- field checks -------------------------------------------------------------------------------


def _int(msg: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = msg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("invalid", f"'{key}' must be an integer from {lo} to {hi}")
    return value


def _opt_str(msg: dict[str, Any], key: str, limit: int = 200) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError("invalid", f"'{key}' must be a string of at most {limit} characters")
    return value


def _bytes(value: Any, key: str, limit: int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise ProtocolError("invalid", f"'{key}' must be bytes")
    if len(value) > limit:
        raise ProtocolError("too_large", f"'{key}' is {len(value)} bytes, above {limit}")
    return value


def _id_list(msg: dict[str, Any], key: str) -> list[int]:
    value = msg.get(key)
    if not isinstance(value, list) or len(value) > 4 * MAX_BATCH:
        raise ProtocolError("invalid", f"'{key}' must be a list of lease ids")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ProtocolError("invalid", f"'{key}' must hold positive integer lease ids")
    return value


# --- messages from workers ----------------------------------------------------------------------

ERROR_KINDS = {"timeout", "out_of_memory", "output_too_large", "trap", "exit", "invalid", "host"}


def parse_hello(msg: dict[str, Any]) -> dict[str, Any]:
    version = _int(msg, "v", 0, 1 << 16)
    if version != VERSION:
        raise ProtocolError("version", f"this server speaks protocol {VERSION}, not {version}")
    kind = msg.get("kind")
    if kind not in ("browser", "native"):
        raise ProtocolError("invalid", "'kind' must be browser or native")
    kernels = msg.get("kernels", [])
    if (
        not isinstance(kernels, list)
        or len(kernels) > 1000
        or not all(isinstance(k, str) and len(k) == 64 for k in kernels)
    ):
        raise ProtocolError("invalid", "'kernels' must be a list of sha256 hex digests")
    campaign = msg.get("campaign")
    if campaign is not None:
        campaign = _int(msg, "campaign", 1, 1 << 62)
    return {
        "kind": kind,
        "slots": _int(msg, "slots", 1, MAX_SLOTS),
        "kernels": kernels,
        "agent": _opt_str(msg, "agent") or "",
        "token": _opt_str(msg, "token", 100),
        "site": _opt_str(msg, "site", 64),
        "campaign": campaign,
        "js": bool(msg.get("js", kind == "browser")),
    }


def parse_want(msg: dict[str, Any]) -> int:
    return _int(msg, "n", 0, MAX_BATCH)


def parse_results(msg: dict[str, Any], *, max_output: int) -> list[dict[str, Any]]:
    """Result items: {lease, ok, out, exit, err, stderr, ms}. Returns normalized dicts."""
    items = msg.get("results")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise ProtocolError("invalid", f"'results' must be a list of 1 to {MAX_BATCH} results")
    parsed = []
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError("invalid", "each result is a map")
        ok = item.get("ok")
        if not isinstance(ok, bool):
            raise ProtocolError("invalid", "each result needs a boolean 'ok'")
        err = item.get("err")
        if not ok and err not in ERROR_KINDS:
            raise ProtocolError("invalid", f"a failed result needs 'err' in {sorted(ERROR_KINDS)}")
        exit_code = item.get("exit")
        if exit_code is not None and (
            isinstance(exit_code, bool)
            or not isinstance(exit_code, int)
            or not -(1 << 31) <= exit_code < (1 << 31)
        ):
            raise ProtocolError("invalid", "'exit' must be a 32-bit integer or nil")
        stderr = item.get("stderr", b"")
        stderr = _bytes(stderr, "stderr", 64 * 1024)[-MAX_STDERR:]
        parsed.append(
            {
                "lease": _int(item, "lease", 1, 1 << 62),
                "ok": ok,
                "output": _bytes(item.get("out", b""), "out", max_output),
                "exit": exit_code,
                "err": None if ok else err,
                "stderr": stderr.decode("utf-8", "replace"),
                "ms": _int(item, "ms", 0, 1 << 31, default=0),
            }
        )
    return parsed


def parse_checkpoint(msg: dict[str, Any], *, max_checkpoint: int) -> tuple[int, bytes]:
    return _int(msg, "lease", 1, 1 << 62), _bytes(msg.get("data"), "data", max_checkpoint)


def parse_progress(msg: dict[str, Any]) -> dict[int, float]:
    value = msg.get("p")
    if not isinstance(value, dict) or len(value) > 4 * MAX_BATCH:
        raise ProtocolError("invalid", "'p' must map lease ids to fractions")
    out: dict[int, float] = {}
    for k, v in value.items():
        if not isinstance(k, int) or isinstance(v, bool) or not isinstance(v, int | float):
            raise ProtocolError("invalid", "'p' must map lease ids to fractions")
        out[k] = min(1.0, max(0.0, float(v)))
    return out


def parse_release(msg: dict[str, Any]) -> list[int]:
    return _id_list(msg, "leases")


def parse_metrics(msg: dict[str, Any]) -> dict[str, int]:
    return {
        "busy_ms": _int(msg, "busy_ms", 0, 1 << 40, default=0),
        "idle_ms": _int(msg, "idle_ms", 0, 1 << 40, default=0),
    }


def decode_envelope(body: bytes) -> dict[str, Any]:
    """An HTTP-fallback request body: {session, secret, messages: [...]}."""
    data = _unpack(body, MAX_FRAME)
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ProtocolError("malformed", "the body is a map with a list 'messages'")
    session, secret = data.get("session"), data.get("secret")
    if session is not None and (not isinstance(session, int) or not isinstance(secret, str)):
        raise ProtocolError("malformed", "'session' must be an integer with a string 'secret'")
    if len(data["messages"]) > 64:
        raise ProtocolError("invalid", "at most 64 messages per request")
    return {"session": session, "secret": secret, "messages": data["messages"]}
