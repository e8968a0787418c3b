"""A point in time on the monotonic clock, so wall-clock jumps cannot move it."""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    @classmethod
    def never(cls) -> "Deadline":
        return cls(float("inf"))

    def remaining(self) -> float:
        """Seconds left; negative once passed."""
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def earlier(self, seconds: float) -> "Deadline":
        """The same deadline moved `seconds` earlier, to keep time in reserve."""
        return Deadline(self.at - seconds)

    def bound(self, timeout: float) -> float:
        """`timeout` shortened so a blocking call cannot outlive this deadline (never below 1 ms)."""
        return max(0.001, min(timeout, self.remaining()))
