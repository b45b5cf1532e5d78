"""The protocol's message structs (workers/protocol.py): decoding refuses what they do not
declare, and docs/protocol.md's tables are the ones generated from them."""

from __future__ import annotations

import msgpack
import pytest

from workers import protocol, protocol_docs


def test_docs_protocol_md_is_generated_from_the_structs() -> None:
    text = protocol_docs.DOC.read_text()
    assert protocol_docs.render(text) == text, (
        "docs/protocol.md is stale: run `python -m workers.protocol_docs`"
    )


def test_every_message_type_is_in_the_docs() -> None:
    text = protocol_docs.DOC.read_text()
    for union in (protocol.WorkerMessage, protocol.ServerMessage):
        for tag in protocol._tags(union):
            assert f"| `{tag}` |" in text


def frame(**message: object) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def test_a_result_decodes_into_typed_items() -> None:
    msg = protocol.decode(
        frame(
            t="result",
            results=[
                {"lease": 3, "ok": True, "output": b"42", "exit": 0, "ms": 7},
                {"lease": 4, "ok": False, "err": "trap", "stderr": b"x" * 5000},
            ],
            want=2,
        )
    )
    assert isinstance(msg, protocol.Result) and msg.want == 2
    good, bad = msg.results
    assert good.output == b"42" and good.err is None and good.ms == 7
    assert bad.output == b"" and bad.err == "trap" and len(bad.stderr_text) == protocol.MAX_STDERR


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"t": "want", "n": protocol.MAX_BATCH + 1}, "invalid"),
        ({"t": "want", "n": True}, "invalid"),
        ({"t": "want", "n": 1, "extra": 1}, "invalid"),
        ({"t": "want"}, "invalid"),
        ({"t": "result", "results": []}, "invalid"),
        ({"t": "result", "results": [{"lease": 1, "ok": False}]}, "invalid"),
        ({"t": "result", "results": [{"lease": 1, "ok": False, "err": "bored"}]}, "invalid"),
        ({"t": "result", "results": [{"lease": 0, "ok": True}]}, "invalid"),
        ({"t": "result", "results": [{"lease": 1, "ok": True, "output": "text"}]}, "invalid"),
        (
            {"t": "result", "results": [{"lease": 1, "ok": True, "stderr": b"x" * 70_000}]},
            "too_large",
        ),
        ({"t": "release", "leases": [1, -2]}, "invalid"),
        ({"t": "progress", "p": {"a": 0.5}}, "invalid"),
        ({"t": "hello", "v": 2, "kind": "toaster", "slots": 1}, "invalid"),
        ({"t": "hello", "v": 2, "kind": "native", "slots": 0}, "invalid"),
        ({"t": "hello", "v": 2, "kind": "native", "slots": 1, "kernels": ["ab"]}, "invalid"),
        ({"t": "welcome"}, "unknown_type"),
        ({"t": 7}, "malformed"),
        ({"n": 1}, "malformed"),
    ],
)
def test_what_the_structs_refuse(message: dict[str, object], code: str) -> None:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode(frame(**message))
    assert caught.value.code == code


def test_hello_ignores_fields_it_does_not_know() -> None:
    hello = protocol.decode(frame(t="hello", v=2, kind="browser", slots=2, npu=True))
    assert isinstance(hello, protocol.Hello) and hello.accepts_js


def test_server_messages_round_trip() -> None:
    tasks = protocol.Tasks(
        tasks=[protocol.TaskItem(lease=1, task=2, c=3, input=b"in", ckpt=b"ck")],
        campaigns={
            3: protocol.CampaignDesc(
                name="n",
                kernel="a" * 64,
                kind="wasm",
                static=None,
                args=[],
                env={},
                timeout=5,
                memory=None,
            )
        },
    )
    wire = msgpack.unpackb(protocol.encode(tasks), raw=False, strict_map_key=False)
    assert wire["tasks"] == [{"lease": 1, "task": 2, "c": 3, "in": b"in", "ckpt": b"ck"}]
    assert protocol.decode_server(protocol.encode(tasks)) == tasks
    for message in (
        protocol.Ack(leases=[1], ignored=[]),
        protocol.Cancel(leases=[1], reason="r"),
        protocol.Error(code="invalid", message="m", fatal=False),
        protocol.Idle(),
        protocol.Pong(),
        protocol.Bye(),
    ):
        assert protocol.decode_server(protocol.encode(message)) == message


def test_an_envelope_keeps_its_messages_raw_for_the_sessions_version() -> None:
    body = frame(session=4, secret="s", messages=[{"t": "ping"}, {"t": "want", "n": 1}])
    envelope = protocol.decode_envelope(body)
    assert envelope.session == 4 and envelope.secret == "s"
    assert [type(protocol.decode(m)) for m in envelope.messages] == [protocol.Ping, protocol.Want]
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode_envelope(frame(messages=[{"t": "ping"}] * 65))
    assert caught.value.code == "invalid"


def test_frames_nested_too_deeply_are_malformed_not_a_crash() -> None:
    # msgspec recurses once per level and raises RecursionError past Python's limit.
    deep = b"\x91" * 5000 + b"\x90"
    for decode, head in (
        (protocol.decode, msgpack.packb({"t": "result", "data": None})[:-1]),
        (protocol.decode_envelope, frame(session=None, secret=None, messages=[])[:-1]),
    ):
        with pytest.raises(protocol.ProtocolError) as caught:
            decode(head + deep)
        assert caught.value.code == "malformed"
