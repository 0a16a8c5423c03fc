"""Live call counters: each HTTP attempt's outcome, counted as it ends."""

from __future__ import annotations

from collections.abc import Callable

from fleetscan.engine.control import Stopped
from fleetscan.errors import ThrottledError, TimedOutError
from fleetscan.summary import ScanCounters

__all__ = ["CallStats"]


class CallStats:
    """Counts attempts into ``counters``: sent, succeeded (with the time, for the peak
    TPS), failed, throttled, timed out, retried."""

    __slots__ = ("counters", "monotonic")

    def __init__(self, counters: ScanCounters, *, monotonic: Callable[[], float]) -> None:
        self.counters = counters
        self.monotonic = monotonic

    def attempt(self, error: BaseException | None) -> None:
        """One attempt ended: ``error`` is None on success."""
        if isinstance(error, Stopped):
            return  # never sent
        counters = self.counters
        counters.calls_sent += 1
        if error is None:
            counters.calls_succeeded += 1
            counters.success_peak.add(self.monotonic())
        else:
            counters.calls_failed += 1
            if isinstance(error, ThrottledError):
                counters.calls_throttled += 1
            elif isinstance(error, TimedOutError):
                counters.calls_timed_out += 1

    def retried(self, attempts: int) -> None:
        """A call ended after ``attempts`` attempts: all but the first were retries."""
        self.counters.calls_retried += max(0, attempts - 1)
