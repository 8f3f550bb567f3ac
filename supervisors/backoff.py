"""Jittered exponential backoff for upstream restarts: 1, 2, 4 … 30 s.

Pure state; the supervisor sleeps. `reset` after healthy media or a manual restart.
"""

from __future__ import annotations

import random

import attrs


@attrs.define
class Backoff:
    first: float = 1.0
    cap: float = 30.0
    jitter: float = 0.2  # each delay is scaled by a factor in [1 - jitter, 1 + jitter]
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    _tries: int = 0

    def next(self) -> float:
        base: float = min(self.cap, self.first * 2.0**self._tries)
        self._tries += 1
        return float(min(self.cap, base * self.rng.uniform(1 - self.jitter, 1 + self.jitter)))

    def reset(self) -> None:
        self._tries = 0
