"""The worker protocol: every message declared once, as a msgspec Struct.

Plain Python (no Django): the server's consumer and HTTP fallback (through
workers/connection.py), the native worker and the tests share these declarations, and
docs/protocol.md's message tables are generated from them (`python -m workers.protocol`;
tests/test_protocol_types.py fails when the page is stale). Every frame is a msgpack map whose
key "t" names its type (a tagged union); decoding checks the frame's size, parses it and
validates every field's type and bounds in one pass, and anything unexpected raises
ProtocolError with a code and a message for the peer.

Versions: a session speaks the version its hello names. Version 2 calls a result's output
`output` and refuses fields it does not know (except in hello, where a newer worker may announce
more); version 1 (`out`, unknown fields ignored) is still accepted, so workers and cached
browser pages from before the change keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, get_args

import msgspec

# The manifest of a gpu kernel is declared with the GPU kernel contract (plain Python, shared
# with the upload checks in campaigns/): re-exported here as part of the protocol.
from kernelhost.gpu import GpuManifest as GpuManifest

VERSION = 2
VERSIONS = (1, 2)  # what a hello's `v` may say
MAX_FRAME = 16 * 1024 * 1024  # a result batch may carry several MiB of outputs
#: What the server reads of one WebSocket message (daphne's --websocket-max-message-size): above
#: MAX_FRAME so that an oversized frame gets the `too_large` error before the close; beyond this
#: the server drops the connection without reading on.
MAX_WEBSOCKET_MESSAGE = 2 * MAX_FRAME
#: The server's WebSocket keepalive (daphne's --ping-interval and --ping-timeout): a ping frame
#: to every open socket once per PING_INTERVAL, closed when no pong comes within PING_TIMEOUT.
#: A peer that vanishes without a close (a cut cable, a sleeping laptop) is found dead, and its
#: leases released, within PING_INTERVAL + PING_TIMEOUT + 1 s (ccgsc/server.py looks every
#: second; daphne's own server every 2 s): 81 s.
#: Every ping is CPU for every idle session (daphne's default, 20 s, was most of an idle
#: process's CPU: docs/benchmarks.md, Scale); 50 s stays below the idle timeouts proxies and
#: load balancers commonly apply (60 s; deploy/nginx.conf keeps /ws/ open for 1 h).
PING_INTERVAL = 50
#: The application-level heartbeat a WebSocket worker is told in `welcome` (`ping` messages).
#: The server needs none of it to know a session is alive (its process vouches for all of its
#: sessions: workers/liveness.py), nor to find a vanished peer (the keepalive above). It lets a
#: worker find a silent server (the native worker reconnects after two heartbeats without a
#: word, workers/native/client.py SILENT_HEARTBEATS: 90 s) and keeps traffic flowing through
#: proxies that time out idle connections (commonly 60 s; Heroku's router 55 s), and, coming
#: within PING_INTERVAL, it spares the server its own keepalive ping. Every ping is a frame in
#: and one out for the server, its main cost for an idle session: at 10,000 sessions 222 a
#: second at 45 s (333 at the former 30 s, 500 at 20 s; docs/benchmarks.md, Scale).
#: Workers whose hello says `pongs` are told `beat` + QUIET_MARGIN instead (below).
WEBSOCKET_HEARTBEAT = 45
#: A worker whose hello says `pongs` answers the server's `ping` with `pong`. The server then
#: keeps its idle WebSocket session alive itself: its keepalive sends that session the
#: protocol's `ping` (which a browser's script sees, unlike a WebSocket ping) once it has been
#: silent PING_INTERVAL s (`beat` in welcome's limits: the server's own setting), and closes
#: it if no `pong` (or any other frame) comes within PING_TIMEOUT. The worker pings only when
#: the server has been silent `beat` + QUIET_MARGIN s (its `heartbeat`: 55 s), which an idle
#: session's beats never let happen (the server's check runs every second: beats come `beat`
#: to `beat` + 1 s apart, plus the round trip), and reconnects after twice that without a
#: word. Why: the server sends the beats of every session due in one pass, once a second, and
#: their pongs come back together, where pings every worker times for itself arrive one by
#: one and wake the server one by one (each wake-up costs more than the ping it carries:
#: docs/benchmarks.md, Scale). Traffic then flows both ways at least every 56 s, under the
#: 60 s of common proxies.
QUIET_MARGIN = 5
QUIET_HEARTBEAT = PING_INTERVAL + QUIET_MARGIN
PING_TIMEOUT = 30
DAPHNE_KEEPALIVE_ARGS = (
    "--ping-interval",
    str(PING_INTERVAL),
    "--ping-timeout",
    str(PING_TIMEOUT),
)
MAX_BATCH = 256  # tasks in one frame, results in one frame
MAX_SLOTS = 256
MAX_STDERR = 4096
MAX_STDERR_IN = 64 * 1024  # accepted per result; the last MAX_STDERR bytes are kept
MAX_IDS = 4 * MAX_BATCH  # lease ids in a release or cancel, entries in a progress map
MAX_ENVELOPE_MESSAGES = 64

ERROR_KINDS = ("timeout", "out_of_memory", "output_too_large", "trap", "exit", "invalid", "host")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- field types (bounds are part of the type: msgspec checks them while decoding) ---------------

LeaseId = Annotated[int, msgspec.Meta(ge=1, le=1 << 62)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_BATCH)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=1 << 40)]
Int32 = Annotated[int, msgspec.Meta(ge=-(1 << 31), le=(1 << 31) - 1)]
Sha256 = Annotated[str, msgspec.Meta(min_length=64, max_length=64)]
# Bytes travel as msgpack bin (version 1 also took text, as UTF-8: see V1Bytes).
Data = Annotated[bytes, msgspec.Meta(max_length=MAX_FRAME)]
StderrData = Annotated[bytes, msgspec.Meta(max_length=MAX_STDERR_IN)]
LeaseIds = Annotated[list[LeaseId], msgspec.Meta(max_length=MAX_IDS)]
ErrorKind = Literal[
    "timeout", "out_of_memory", "output_too_large", "trap", "exit", "invalid", "host"
]


class Message(msgspec.Struct, tag_field="t", forbid_unknown_fields=True, omit_defaults=True):
    """A protocol message: a msgpack map whose "t" is the class's tag."""


# --- worker -> server ---------------------------------------------------------------------------


class GpuInfo(msgspec.Struct, omit_defaults=True):
    """A session's WebGPU adapter, in hello: its name and the limits the GPU kernel contract
    needs (`max_buffer`: maxStorageBufferBindingSize, `max_workgroups`:
    maxComputeWorkgroupsPerDimension, `max_invocations`: maxComputeInvocationsPerWorkgroup)."""

    adapter: Annotated[str, msgspec.Meta(max_length=200)]
    max_buffer: Annotated[int, msgspec.Meta(ge=0, le=1 << 48)]
    max_workgroups: Annotated[int, msgspec.Meta(ge=0, le=1 << 31)]
    max_invocations: Annotated[int, msgspec.Meta(ge=0, le=1 << 31)]


class Hello(Message, tag="hello", forbid_unknown_fields=False):
    """First message; opens a session. `v`: the protocol version (1 or 2); `kernels`: sha256 of
    kernels already cached; `token`: an organization API token; `site`: an embed site key;
    `campaign`: work for this campaign only; `js`: accepts JavaScript kernels (default true
    for browsers); `gpu`: the WebGPU adapter when the session runs gpu kernels (without it, it
    is never sent one); `memory`: bytes the session gives a kernel at most (campaigns whose
    kernel declares more are not sent to it); `pongs`: the worker answers the server's `ping`
    with `pong` (over WebSocket the server then keeps the idle session alive with its pings:
    `beat` in welcome's limits). With a token, the organization's unapproved campaigns are
    served too; without one, only campaigns a platform admin approved. Unknown fields are
    ignored here (a newer worker may announce more than this server knows)."""

    v: Annotated[int, msgspec.Meta(ge=0, le=1 << 16)]
    kind: Literal["browser", "native"]
    slots: Annotated[int, msgspec.Meta(ge=1, le=MAX_SLOTS)]
    kernels: Annotated[list[Sha256], msgspec.Meta(max_length=1000)] = []
    agent: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    token: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    site: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    campaign: LeaseId | None = None
    js: bool | None = None
    pongs: bool | None = None
    gpu: GpuInfo | None = None
    memory: Annotated[int, msgspec.Meta(ge=0, le=1 << 48)] | None = None

    @property
    def accepts_js(self) -> bool:
        return self.kind == "browser" if self.js is None else self.js


class Want(Message, tag="want"):
    """ "I can take up to n more tasks." The server sends what it has, capped by what it thinks
    this session should hold (see Scheduling). An unmet want stays open: when work appears the
    server pushes a `tasks` frame without being asked again."""

    n: Count


class ResultItem(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One task's result. `ok` true: `output` is the output (at most the server's
    `max_output`), `exit` 0. `ok` false: `err` says why, `exit` is the code or nil, `stderr`
    the tail (the last 4 KiB are kept). `ms` is the kernel's run time. (Version 1 calls
    `output` `out`.)"""

    lease: LeaseId
    ok: bool
    output: Data = b""
    exit: Int32 | None = None
    err: ErrorKind | None = None
    stderr: StderrData = b""
    ms: Annotated[int, msgspec.Meta(ge=0, le=1 << 31)] = 0

    def __post_init__(self) -> None:
        if not self.ok and self.err is None:
            raise ValueError(f"a failed result needs 'err' in {list(ERROR_KINDS)}")

    @property
    def stderr_text(self) -> str:
        """The last MAX_STDERR bytes of stderr, as text."""
        return self.stderr[-MAX_STDERR:].decode("utf-8", "replace")


class Result(Message, tag="result"):
    """Results, batched. `want` asks for more in the same frame."""

    results: Annotated[list[ResultItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    want: Count | None = None


class Checkpoint(Message, tag="checkpoint"):
    """Store a checkpoint for the task behind this lease (at most the server's
    `max_checkpoint`); the next attempt receives it."""

    lease: LeaseId
    data: Data


class Progress(Message, tag="progress"):
    """Progress of running tasks: lease id → fraction 0..1 (≤ 2/s per lease)."""

    p: Annotated[dict[int, float], msgspec.Meta(max_length=MAX_IDS)]


class Release(Message, tag="release"):
    """Give leases back (shutting down, pausing); not counted as failed attempts."""

    leases: LeaseIds


class Metrics(Message, tag="metrics"):
    """Session metrics since the last report (browsers)."""

    busy_ms: Millis = 0
    idle_ms: Millis = 0


class Ping(Message, tag="ping"):
    """Heartbeat, answered with `pong`. From a worker: every `heartbeat` seconds of the limits
    (45 s over WebSocket, 8 s over the HTTP fallback); with `beat` in the limits, only once
    the server has been silent `heartbeat` seconds (55 s). A WebSocket session's liveness is its
    server process's, so the server writes nothing for it. From the server (a hello with
    `pongs`, over WebSocket): sent once the worker has been silent `beat` seconds; answer at
    once, or the socket is closed after 30 s."""


class Pong(Message, tag="pong"):
    """Answer to ping. From a worker it changes nothing but that the session was heard from."""


class Bye(Message, tag="bye"):
    """From a worker: close the session (its leases are released). From the server: the
    answer to it."""


WorkerMessage: TypeAlias = (
    Hello | Want | Result | Checkpoint | Progress | Release | Metrics | Ping | Pong | Bye
)


# Version 1: the same messages with `out` for a result's output, unknown fields ignored, and
# text taken as UTF-8 where bytes are expected.
class V1Bytes(bytes):
    """Bytes or text on the wire (version 1); decoded by _v1_hook into bytes."""


def _v1_hook(tp: type, obj: Any) -> Any:
    if tp is V1Bytes:
        if isinstance(obj, str):
            obj = obj.encode()
        if isinstance(obj, bytes):
            return V1Bytes(obj)
        raise ValueError("Expected `bytes`")
    raise NotImplementedError


class ResultItemV1(ResultItem, forbid_unknown_fields=False):
    output: V1Bytes = msgspec.field(default=V1Bytes(), name="out")
    stderr: V1Bytes = V1Bytes()


class ResultV1(Result, tag="result", forbid_unknown_fields=False):
    results: Annotated[list[ResultItemV1], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]  # type: ignore[assignment]


class WantV1(Want, tag="want", forbid_unknown_fields=False):
    pass


class CheckpointV1(Checkpoint, tag="checkpoint", forbid_unknown_fields=False):
    data: V1Bytes


class ProgressV1(Progress, tag="progress", forbid_unknown_fields=False):
    pass


class ReleaseV1(Release, tag="release", forbid_unknown_fields=False):
    pass


class MetricsV1(Metrics, tag="metrics", forbid_unknown_fields=False):
    pass


class PingV1(Ping, tag="ping", forbid_unknown_fields=False):
    pass


class PongV1(Pong, tag="pong", forbid_unknown_fields=False):
    pass


class ByeV1(Bye, tag="bye", forbid_unknown_fields=False):
    pass


WorkerMessageV1: TypeAlias = (
    Hello
    | WantV1
    | ResultV1
    | CheckpointV1
    | ProgressV1
    | ReleaseV1
    | MetricsV1
    | PingV1
    | PongV1
    | ByeV1
)


# --- server -> worker ---------------------------------------------------------------------------


class Limits(msgspec.Struct, omit_defaults=True):
    """The server's limits, sent in `welcome` (bytes; `heartbeat` and `beat` in seconds).
    `beat` (a hello with `pongs`, over WebSocket, to a server that sends them): the server
    pings the session once it has been silent this long; absent, the worker pings every
    `heartbeat`."""

    max_frame: int
    max_batch: int
    max_output: int
    max_checkpoint: int
    heartbeat: int
    beat: int | None = None


class Welcome(Message, tag="welcome"):
    """Session opened. `secret` authenticates HTTP-fallback requests."""

    v: int
    session: int
    secret: str
    limits: Limits


class CampaignDesc(msgspec.Struct):
    """What a worker needs to run a campaign's tasks (sent once per session). Run with argv
    ["kernel", *args, *task.args], env = env overlaid by the task's, `/ccgsc/static` = blob
    `static`, wall-time limit `timeout` seconds, `memory` bytes (nil: the host's default).
    Kind "gpu": `kernel` is WGSL source and `gpu` its manifest (defaults filled in); args,
    env and static do not apply."""

    name: str
    kernel: Sha256
    kind: str
    static: Sha256 | None
    args: list[str]
    env: dict[str, str]
    timeout: int
    memory: int | None
    gpu: GpuManifest | None = None


class TaskItem(msgspec.Struct, omit_defaults=True):
    """One leased task: `c` its campaign, stdin = `in`, argv `["kernel", *campaign.args,
    *args]`, env = the campaign's overlaid by `env`, `/ccgsc/checkpoint` = `ckpt` (the task's
    last checkpoint, when it has one)."""

    lease: LeaseId
    task: int
    c: int
    input: Data = msgspec.field(default=b"", name="in")
    args: list[str] | None = None
    env: dict[str, str] | None = None
    ckpt: bytes | None = None


class Tasks(Message, tag="tasks"):
    """Leased tasks. A campaign's descriptor is sent the first time one of its tasks goes to
    this session."""

    tasks: list[TaskItem]
    campaigns: dict[int, CampaignDesc] | None = None


class Ack(Message, tag="ack"):
    """Results durably recorded (`leases`), or acknowledged and ignored (`ignored`: late —
    the lease expired or was withdrawn — or duplicate). Also `{checkpoint, stored}` and
    `{released}`. (Points are granted later, when results are validated: an ack carries
    none.)"""

    leases: list[int] | None = None
    ignored: list[int] | None = None
    checkpoint: int | None = None
    stored: bool | None = None
    released: list[int] | None = None


class Idle(Message, tag="idle"):
    """Nothing to do now. Do not poll: wait for a pushed `tasks` frame."""


class Cancel(Message, tag="cancel"):
    """Stop these tasks and drop their results (campaign paused or cancelled, task decided
    elsewhere, the lease expired — `lease expired`: the task went back to the queue for
    another session —, or this session failed 6 of the campaign's tasks in a row: it then gets
    none of that campaign's tasks for 30 s, doubling with each further streak up to 10 min,
    until a success; never when no other connected session may run the campaign, whose retries
    would then have nowhere to go: a kernel that fails everywhere ends `failed` as soon as its
    attempts are spent)."""

    leases: list[int]
    reason: str


class Error(Message, tag="error"):
    """A refused message, which changed nothing. `code`: `malformed`, `too_large`, `invalid`,
    `unknown_type`, `hello_first`, `not_leased` (a result or checkpoint for a lease this
    session was never given — nothing is stored), `version`, `auth`, `session`, `origin`,
    `busy` (a hello from a network that already has MAX_SESSIONS_PER_ORIGIN sessions, or no
    slots left under MAX_SLOTS_PER_ORIGIN; fatal). `fatal`: the session ends."""

    code: str
    message: str
    fatal: bool


ServerMessage: TypeAlias = Welcome | Tasks | Ack | Idle | Cancel | Ping | Pong | Error | Bye


class Envelope(msgspec.Struct):
    """An HTTP-fallback request body: {session, secret, messages: [...]} (each message is
    decoded in the session's version once the session is known)."""

    messages: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_ENVELOPE_MESSAGES)]
    session: int | None = None
    secret: str | None = None


class Reply(msgspec.Struct):
    """An HTTP-fallback response body."""

    messages: list[Any]


# --- encoding and decoding ----------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_worker_decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {
    1: msgspec.msgpack.Decoder(WorkerMessageV1, dec_hook=_v1_hook),
    2: msgspec.msgpack.Decoder(WorkerMessage),
}
_server_decoder = msgspec.msgpack.Decoder(ServerMessage)
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)


class _Head(msgspec.Struct):
    t: str


_head_decoder = msgspec.msgpack.Decoder(_Head)


def _tags(union: Any) -> set[str]:
    return {str(cls.__struct_config__.tag) for cls in get_args(union)}


_TAGS = {1: _tags(WorkerMessageV1), 2: _tags(WorkerMessage)}
_SERVER_TAGS = _tags(ServerMessage)


def encode(message: msgspec.Struct | dict[str, Any]) -> bytes:
    """A message (or an envelope) as msgpack. Dicts are for tests that send what a struct
    would refuse."""
    return _encoder.encode(message)


def _refusal(
    exc: msgspec.ValidationError, frame: bytes | msgspec.Raw, tags: set[str]
) -> ProtocolError:
    """Name what was wrong with a frame that decodes but does not validate."""
    try:
        head = _head_decoder.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return ProtocolError("malformed", "a message is a map with a string type 't'")
    if head.t not in tags:
        return ProtocolError("unknown_type", f"unknown message type {head.t!r}")
    text = str(exc)
    if text.startswith(("Expected `bytes` of length <=", "Expected `str` of length <=")):
        return ProtocolError("too_large", text)
    return ProtocolError("invalid", text)


def _check_size(frame: bytes | msgspec.Raw, max_frame: int) -> None:
    if len(frame) > max_frame:
        raise ProtocolError("too_large", f"frame of {len(frame)} bytes exceeds {max_frame}")


def decode(frame: bytes | msgspec.Raw, *, version: int = VERSION) -> WorkerMessage:
    """A frame from a worker speaking `version`, validated; ProtocolError for anything else."""
    _check_size(frame, MAX_FRAME)
    try:
        message: WorkerMessage = _worker_decoders[version].decode(frame)
    except msgspec.ValidationError as exc:
        raise _refusal(exc, frame, _TAGS[version]) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not a msgpack frame: {exc}") from None
    return message


def decode_server(frame: bytes, *, max_frame: int = MAX_FRAME) -> ServerMessage:
    """A frame from the server (for workers), validated; ProtocolError for anything else."""
    _check_size(frame, max_frame)
    try:
        message: ServerMessage = _server_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise _refusal(exc, frame, _SERVER_TAGS) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not a msgpack frame: {exc}") from None
    return message


def decode_envelope(body: bytes) -> Envelope:
    """An HTTP-fallback request body; its messages stay raw until the session's version is
    known."""
    _check_size(body, MAX_FRAME)
    try:
        return _envelope_decoder.decode(body)
    except msgspec.ValidationError as exc:
        code = "invalid" if "length <=" in str(exc) else "malformed"
        raise ProtocolError(
            code, f"the body is {{session, secret, messages: [...]}}: {exc}"
        ) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not a msgpack frame: {exc}") from None


def decode_reply(body: bytes, *, max_frame: int = MAX_FRAME) -> list[ServerMessage]:
    """An HTTP-fallback response body (for workers): its messages, each validated."""
    _check_size(body, max_frame)
    try:
        raw = msgspec.msgpack.decode(body, type=_RawReply)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not a protocol answer: {exc}") from None
    return [decode_server(bytes(m), max_frame=max_frame) for m in raw.messages]


class _RawReply(msgspec.Struct):
    messages: list[msgspec.Raw] = []


def decode_map(frame: bytes, *, max_frame: int = MAX_FRAME) -> dict[str, Any]:
    """A frame as a plain map with a string "t", unvalidated beyond that (the native worker
    reads server frames this way and checks each field it uses)."""
    _check_size(frame, max_frame)
    try:
        message = msgspec.msgpack.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not a msgpack frame: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("malformed", "a message is a map with a string type 't'")
    return message


# --- the ping a server answers without decoding it ----------------------------------------------


def _ping_answers() -> dict[int, dict[bytes, bytes]]:
    """For each version, the `ping` frame as this encoder writes it (msgpack's packb and the
    browser's encoder write the same bytes: a one-entry map, its key and tag as fixstr) and the
    `pong` frame that answers it. The server answers exactly these bytes in its WebSocket
    protocol (ccgsc/server.py), without waking the session's consumer; any other frame, a ping
    spelled otherwise included, is decoded as usual. Checked here, at import, against the
    decoders: the frames cannot drift from the message types."""
    ping, pong = encode(Ping()), encode(Pong())
    if not isinstance(decode_server(pong), Pong):
        raise RuntimeError(f"{pong!r} does not decode as pong")
    answers: dict[int, dict[bytes, bytes]] = {}
    for version in VERSIONS:
        if not isinstance(decode(ping, version=version), Ping):
            raise RuntimeError(f"{ping!r} does not decode as a version {version} ping")
        answers[version] = {ping: pong}
    return answers


#: {version: {ping frame: pong frame}} (see _ping_answers).
PING_ANSWERS = _ping_answers()


def _beat() -> tuple[bytes, bytes]:
    """The server's `ping` frame to a session whose hello said `pongs`, and the worker's `pong`
    frame that answers it, which the server takes without waking the session's consumer
    (ccgsc/server.py); a pong spelled otherwise is decoded as usual. Checked against the
    decoders, as above."""
    ping, pong = encode(Ping()), encode(Pong())
    if not isinstance(decode_server(ping), Ping):
        raise RuntimeError(f"{ping!r} does not decode as a server's ping")
    for version in VERSIONS:
        if not isinstance(decode(pong, version=version), Pong):
            raise RuntimeError(f"{pong!r} does not decode as a version {version} pong")
    return ping, pong


#: (the server's ping frame, the worker's pong frame) (see _beat).
BEAT = _beat()
