"""Token buckets: the quota model behind BACKPRESSURE and RATE_LIMIT, with exact retry_after_ms."""

from __future__ import annotations

import math
import time


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` answers how long until `cost` tokens exist."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float = 1.0) -> int:
        """0 when granted (tokens taken); otherwise the milliseconds until `cost` tokens are there.

        A cost above the burst can never be granted: callers refuse it before asking.
        """
        self._refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return 0
        return max(1, math.ceil((cost - self.tokens) / self.rate * 1000))

    def configure(self, rate: float, burst: float) -> None:
        """New rate and burst from now on; tokens above the new burst are dropped."""
        self._refill()
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)

    def snapshot(self) -> dict:
        self._refill()
        return {"tokens": round(self.tokens, 3), "rate": self.rate, "burst": self.burst}
