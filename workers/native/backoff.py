"""Exponential backoff with jitter for reconnecting (and retrying downloads)."""

from __future__ import annotations

import random


class Backoff:
    """Delays of initial * factor**n seconds, capped at `maximum`, each drawn uniformly from
    [delay/2, delay] ("equal jitter").

    The jitter matters when a server restarts: thousands of workers lose the connection at the
    same moment, and without it they would all come back in the same instant, every time.
    Keeping at least half of the delay still lets a struggling server breathe. `reset()` after
    a connection that worked, so one blip does not cost a 30 s wait the next time.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The un-jittered delay of the next attempt."""
        # min() before the power would overflow for a long outage; attempts is capped anyway.
        return min(self.maximum, self.initial * self.factor ** min(self.attempts, 64))

    def next(self) -> float:
        """The delay before the next attempt, in seconds; advances the sequence."""
        ceiling = self.ceiling()
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
