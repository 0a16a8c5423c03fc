"""Exact counts of events in a sliding one-second window.

The emulator counts arrivals with it (its limits and its peaks); the scanner counts
its successful calls (the peak TPS of the summary).

An event at time ``t`` belongs to every window ``(s, s + 1.0]`` that contains ``t``.
The most events any such window ever held is the count at some event's own time, so
updating the peak on each event gives the exact maximum, in O(1) amortized time.
Times must not go backwards.
"""

from __future__ import annotations

from collections import deque

__all__ = ["WINDOW_SECONDS", "SlidingWindow"]

WINDOW_SECONDS = 1.0


class SlidingWindow:
    """Times of recent events; `count` and `peak` over any one-second window."""

    __slots__ = ("_times", "peak")

    def __init__(self) -> None:
        # Event times still inside the window that ends at the latest event, oldest first.
        self._times: deque[float] = deque()
        # The largest number of events ever seen in one window.
        self.peak = 0

    def count(self, now: float) -> int:
        """Events in ``(now - 1.0, now]``."""
        times = self._times
        edge = now - WINDOW_SECONDS
        while times and times[0] <= edge:
            times.popleft()
        return len(times)

    def add(self, now: float) -> int:
        """Record an event at ``now``; return the events in the window ending there."""
        n = self.count(now) + 1
        self._times.append(now)
        if n > self.peak:
            self.peak = n
        return n

    def oldest(self) -> float | None:
        """The oldest event still in the window, if any."""
        return self._times[0] if self._times else None
