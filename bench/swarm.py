"""A swarm of simulated protocol clients (asyncio, one task per client, not a thread each)
that answer every task at once: it measures the platform's own cost per task."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgpack
import websockets

from workers import protocol


@dataclass
class SwarmResult:
    clients: int
    policy: str
    seconds: float
    acked: int

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0


async def _client(url: str, slots: int, policy: str, stop: float, counts: list[int]) -> None:
    """policy: "one" (ask for one task, answer it, ask again), "batch" (ask for a fixed batch of
    slots*8 and answer a whole frame at once), "prefetch" (batch answers with a piggy-backed
    want: the server keeps the pipeline full from the client's learned speed)."""
    async with websockets.connect(url, max_size=protocol.MAX_FRAME) as ws:
        await ws.send(
            protocol.encode(
                {
                    "t": "hello",
                    "v": protocol.VERSION,
                    "kind": "native",
                    "slots": slots,
                    "agent": "swarm",
                }
            )
        )
        msgpack.unpackb(await ws.recv())
        want = 1 if policy == "one" else slots * 8
        await ws.send(protocol.encode({"t": "want", "n": want}))
        while time.monotonic() < stop:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.05, stop - time.monotonic()))
            except TimeoutError:
                break
            msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            kind = msg["t"]
            if kind == "tasks":
                results = [
                    {"lease": t["lease"], "ok": True, "output": b"", "exit": 0, "ms": 0}
                    for t in msg["tasks"]
                ]
                frame: dict = {"t": "result", "results": results}
                if policy == "prefetch":
                    frame["want"] = want
                await ws.send(protocol.encode(frame))
            elif kind == "ack":
                counts[0] += len(msg.get("leases", []))
                if policy != "prefetch":
                    await ws.send(protocol.encode({"t": "want", "n": want}))
            elif kind == "idle":
                await asyncio.sleep(0.05)
                await ws.send(protocol.encode({"t": "want", "n": want}))
        await ws.send(protocol.encode({"t": "bye"}))


async def _swarm(url: str, clients: int, slots: int, policy: str, seconds: float) -> SwarmResult:
    counts = [0]
    start = time.monotonic()
    stop = start + seconds
    await asyncio.gather(*(_client(url, slots, policy, stop, counts) for _ in range(clients)))
    return SwarmResult(
        clients=clients, policy=policy, seconds=time.monotonic() - start, acked=counts[0]
    )


def run_swarm(
    server_url: str, *, clients: int, slots: int, policy: str, seconds: float
) -> SwarmResult:
    ws_url = server_url.replace("http://", "ws://") + "/ws/work/"
    return asyncio.run(_swarm(ws_url, clients, slots, policy, seconds))
