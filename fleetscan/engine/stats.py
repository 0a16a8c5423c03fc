"""Live call counters: each HTTP attempt's outcome, counted as it ends."""

from __future__ import annotations

from collections.abc import Callable

from fleetscan.engine.control import Stopped
from fleetscan.errors import ThrottledError, TimedOutError
from fleetscan.summary import LaneCounters, ScanCounters

__all__ = ["CallStats"]


class CallStats:
    """Counts attempts into ``counters``: sent, succeeded (with the time, for the peak
    TPS), failed, throttled, timed out, retried; and, with ``api``, into that API's
    `LaneCounters` too."""

    __slots__ = ("counters", "lane", "monotonic", "source")

    def __init__(
        self,
        counters: ScanCounters,
        *,
        monotonic: Callable[[], float],
        api: str | None = None,
        address: str | None = None,
    ) -> None:
        self.counters = counters
        self.monotonic = monotonic
        self.lane: LaneCounters | None = None
        if api is not None:
            self.lane = counters.lanes.setdefault(api, LaneCounters())
        # The source address's counters, all APIs together (several addresses only).
        self.source: LaneCounters | None = None
        if address is not None:
            self.source = counters.addresses.setdefault(address, LaneCounters())

    def attempt(self, error: BaseException | None) -> None:
        """One attempt ended: ``error`` is None on success."""
        if isinstance(error, Stopped):
            return  # never sent
        counters = self.counters
        counters.calls_sent += 1
        now = self.monotonic()
        parts = [part for part in (self.lane, self.source) if part is not None]
        for part in parts:
            part.calls_sent += 1
            part.sent_peak.add(now)
        if error is None:
            counters.calls_succeeded += 1
            counters.success_peak.add(now)
            for part in parts:
                part.calls_succeeded += 1
        else:
            counters.calls_failed += 1
            if isinstance(error, ThrottledError):
                counters.calls_throttled += 1
                for part in parts:
                    part.calls_throttled += 1
            elif isinstance(error, TimedOutError):
                counters.calls_timed_out += 1

    def retried(self, attempts: int) -> None:
        """A call ended after ``attempts`` attempts: all but the first were retries."""
        self.counters.calls_retried += max(0, attempts - 1)
