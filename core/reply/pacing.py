"""How often one reply updates its message, independent of the platform budget.

The budget protects the platform's limit shared by all replies; pacing keeps a
single reply from spending that limit on one-token edits. Cadences of the best
bots sit between 0.5 and 1.5 s; a character threshold avoids an edit for a
lone comma, and ``max_wait`` guarantees a slow trickle still shows up.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOCK_GRAIN = 1e-6
"""Waits shorter than this are rounding noise of float time, not a reason to sleep."""


@dataclass(frozen=True, slots=True)
class Pacing:
    min_interval: float = 1.0
    """Seconds from the end of one update to the start of the next."""
    min_chars: int = 0
    """New characters needed before an update, unless ``max_wait`` has passed."""
    max_wait: float = 3.0
    """Seconds after which any change is shown, however small."""

    def __post_init__(self) -> None:
        if self.min_interval < 0 or self.max_wait < 0 or self.min_chars < 0:
            raise ValueError(f"pacing values must not be negative: {self}")

    def due(self, now: float, last_update_end: float, new_chars: int) -> float:
        """Seconds until an update with ``new_chars`` new characters may start
        (0: now). With ``new_chars`` below the threshold, the answer is the time
        until ``max_wait`` lets it through, which more text may shorten."""
        elapsed = now - last_update_end
        wait = self.min_interval - elapsed
        if new_chars < self.min_chars:
            wait = max(wait, self.max_wait - elapsed)
        return wait if wait > CLOCK_GRAIN else 0.0


IMMEDIATE = Pacing(min_interval=0.0, min_chars=0, max_wait=0.0)
"""For sinks without a rate limit worth pacing for, such as a terminal."""
