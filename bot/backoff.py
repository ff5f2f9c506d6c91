"""Capped, jittered exponential backoff for reconnect loops.

Used by the XMPP transport between connection attempts. The jitter keeps a
fleet of bots (or a bot and its own retries) from reconnecting in lockstep
after a server restart; the cap keeps a long outage from growing the wait
beyond what an owner would tolerate once the server is back.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays of base·2ⁿ capped at `cap`, each drawn from [d/2, d] ("equal jitter").

    Equal jitter rather than full jitter: a delay near zero after a failure
    would turn a refusing server into a tight retry loop.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
