"""One session's results on their way to the server: batched into frames, paced by acks.

Results are sent in batches: at once when RESULT_BATCH are ready or when no other task is in
hand (nothing could share the frame: a synchronous run's answer, the last task of a burst),
else after RESULT_DELAY (a few milliseconds: enough to gather the results of a burst) or,
while every slot has another task queued behind the one it runs, after RESULT_LINGER. Long
tasks then share frames too: the server's cost is mostly per frame (a transaction, the next
lease), and on a machine whose cores also run the server every frame saved is kernel time.
The server keeps about 500 ms of work per slot in our hands, so a linger of 250 ms never
leaves a slot waiting; once the queue runs short, results go at once again.

Everything here runs on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from workers.protocol import Result, ResultItem

from .transport import Transport

log = logging.getLogger("ccgsc.worker")

#: Results per frame that trigger an immediate send.
RESULT_BATCH = 32
#: How long a result may wait for others to share its frame.
RESULT_DELAY = 0.003
#: ... and how long while every slot has another task queued (see module doc).
RESULT_LINGER = 0.25
#: Result frames that may await their ack before further results wait to be batched.
MAX_UNACKED = 1
#: An ack this late is taken as lost (the frame was refused with an error).
ACK_WAIT = 2.0
#: Room kept in every frame below the server's max_frame for the frame's own fields.
FRAME_MARGIN = 65536


class ResultBatcher:
    """The results of one session not sent yet, and its result frames not acknowledged yet.

    `want()` is how many more tasks to ask for on the last frame of a flush; `lingering()`
    whether every slot has another task queued (results then wait RESULT_LINGER); `alone()`
    whether no other task is in hand (results then go at once);
    `on_sent(ok, failed)` hears how many results each frame carries, before it is sent."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_frame: int,
        max_batch: int,
        want: Callable[[], int],
        lingering: Callable[[], bool],
        on_sent: Callable[[int, int], None],
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.transport = transport
        self.max_frame = max_frame
        self.max_batch = max_batch
        self._want = want
        self._lingering = lingering
        self._alone = alone
        self._on_sent = on_sent
        self.items: list[ResultItem] = []
        self.bytes = 0
        self.unacked: deque[float] = deque()  # send times of unacked result frames
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time _handle fires
        self.closed = False

    def __len__(self) -> int:
        return len(self.items)

    @property
    def due(self) -> float | None:
        """When (loop time) the pending results are to be sent, if a flush is scheduled."""
        return self._due if self._handle is not None else None

    def add(self, item: ResultItem) -> None:
        size = len(item.output) + len(item.stderr) + 64
        # Keep every frame well inside the server's max_frame whatever the outputs weigh
        # (forced: flow control must not let a frame grow past what the server accepts).
        if self.items and self.bytes + size > self.max_frame - FRAME_MARGIN:
            self.flush(force=True)
        self.items.append(item)
        self.bytes += size
        if len(self.items) >= min(RESULT_BATCH, self.max_batch) or self._alone():
            self.flush()
            return
        self.flush_soon()

    def acked(self) -> None:
        """The server acknowledged a result frame: the next one may go."""
        if self.unacked:
            self.unacked.popleft()
        if self.items:
            self.flush_soon()

    def flush_soon(self) -> None:
        """Schedule the flush of the pending results: in RESULT_DELAY, or RESULT_LINGER while
        every slot has another task queued."""
        delay = RESULT_LINGER if self._lingering() else RESULT_DELAY
        self._flush_at(asyncio.get_running_loop().time() + delay)

    def _flush_at(self, due: float) -> None:
        """Flush no later than `due` (loop time): an earlier pending flush stays."""
        if self._handle is not None:
            if self._due <= due:
                return
            self._handle.cancel()
        self._due = due
        self._handle = asyncio.get_running_loop().call_at(due, self.flush)

    def flush(self, *, force: bool = False) -> None:
        """Send the pending results (in frames of at most max_batch), the last frame
        carrying our want. Flow control: while MAX_UNACKED result frames await their ack,
        results keep accumulating instead (unless `force`, or a full frame is ready); the
        ack handler flushes them. So a busy server receives fewer, larger batches, which
        is what it handles most efficiently (a fixed cost per frame, small cost per task)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.closed or not self.items:
            return
        if (
            not force
            and self.transport.paced
            and len(self.unacked) >= MAX_UNACKED
            and len(self.items) < self.max_batch
        ):
            waited = time.monotonic() - self.unacked[0]
            if waited < ACK_WAIT:
                # Look again when the oldest ack is overdue, in case it never comes.
                self._flush_at(asyncio.get_running_loop().time() + ACK_WAIT - waited)
                return
            # That frame was refused (an error instead of an ack): stop waiting for it.
            log.debug("no ack for a result frame within %.1f s", ACK_WAIT)
            self.unacked.clear()
        now = time.monotonic()
        while self.items:
            chunk = self.items[: self.max_batch]
            del self.items[: self.max_batch]
            ok = sum(1 for item in chunk if item.ok)
            # Counted before the want below is worked out (--max-tasks leases no more than
            # what is left once these are sent).
            self._on_sent(ok, len(chunk) - ok)
            want = self._want() if not self.items else 0
            self.transport.send(Result(results=chunk, want=want if want > 0 else None))
            self.unacked.append(now)
        self.bytes = 0

    def close(self) -> int:
        """The session ended: nothing more is sent. Returns how many results were dropped."""
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        dropped = len(self.items)
        self.items.clear()
        self.bytes = 0
        return dropped
