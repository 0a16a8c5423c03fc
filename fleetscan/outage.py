"""A dead service costs seconds, not hours: the shared retry budget and the outage
breaker.

- `RetryBudget` is the AWS SDKs' standard retry quota: the scan holds 500 tokens; a
  retry after a fault costs 5, after a timeout or a dropped connection 10; a success
  earns back what its retries cost, or 1. An empty budget fails a call fast instead
  of retrying it. Throttling is not charged: it is an answer, and the limiter paces it.
- `OutageBreaker` watches answers across the whole scan. A refused connection, a
  timeout or a 5xx is "no answer"; anything else the server says is an answer. After
  ``open_after`` seconds with no answer it opens: nothing is sent but one probe at a
  time, one every ``probe_interval`` seconds; the first answer closes it and the scan
  goes on. A call that failed for want of answers asks `verdict` before it is
  recorded as an error: if the service answered meanwhile, the error is the ID's;
  if the breaker opened, it is the outage's, and the ID is asked again later. After
  ``timeout`` seconds without an answer the breaker gives up (`OutageOver`) and the
  scan stops, leaving those IDs without a record for ``--resume``.

Both run on an injected clock and sleep, so tests drive them in virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fleetscan.errors import ApiError, ThrottledError, TransientError

__all__ = [
    "DEFAULT_OUTAGE_TIMEOUT",
    "OutageBreaker",
    "OutageOver",
    "RetryBudget",
    "is_no_answer",
]

RETRY_BUDGET = 500
RETRY_COST = 5
# A timeout or a dropped connection costs more: it held a worker for long, or the
# service may be gone.
NO_ANSWER_RETRY_COST = 10
SUCCESS_REFUND = 1

# Seconds without any answer, across the scan, before the breaker opens.
OPEN_AFTER = 5.0
# One probe at a time, at most one per this many seconds, while open.
PROBE_INTERVAL = 1.0
# Seconds without any answer before the scan gives up (--outage-timeout).
DEFAULT_OUTAGE_TIMEOUT = 300.0
# How often waiting calls look at the breaker again.
POLL_SECONDS = 0.1

_NO_ANSWER_CODES = ("Timeout", "ConnectionError")


def is_no_answer(error: BaseException) -> bool:
    """Whether ``error`` means the service did not answer: refused, timed out, 5xx."""
    if not isinstance(error, TransientError):
        return False
    return error.code in _NO_ANSWER_CODES or (error.http_status or 0) >= 500


class RetryBudget:
    """The scan's shared retry quota; see the module docstring. Not thread-safe (one loop)."""

    def __init__(
        self,
        capacity: int = RETRY_BUDGET,
        *,
        retry_cost: int = RETRY_COST,
        no_answer_cost: int = NO_ANSWER_RETRY_COST,
        refund: int = SUCCESS_REFUND,
    ) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.retry_cost = retry_cost
        self.no_answer_cost = no_answer_cost
        self.refund = refund
        # Retries refused for want of tokens.
        self.refused = 0

    def cost_of(self, error: BaseException) -> int:
        if isinstance(error, ThrottledError):
            return 0
        if isinstance(error, ApiError) and error.code in _NO_ANSWER_CODES:
            return self.no_answer_cost
        return self.retry_cost

    def spend(self, error: BaseException) -> int | None:
        """Take the tokens for a retry after ``error``: their number, or None if empty."""
        cost = self.cost_of(error)
        if cost > self.tokens:
            self.refused += 1
            return None
        self.tokens -= cost
        return cost

    def earn(self, spent: int) -> None:
        """A call succeeded after retries that cost ``spent`` tokens (0: none)."""
        self.tokens = min(self.capacity, self.tokens + (spent or self.refund))


class OutageOver(Exception):
    """The service gave no answer for the outage timeout: the scan stops."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the service gave no answer for {seconds:.0f} s (refused connections, "
            "timeouts or 5xx); the IDs not scanned are left for --resume"
        )
        self.seconds = seconds


class OutageBreaker:
    """See the module docstring. ``clock`` and ``sleep`` must agree (both real or fake)."""

    def __init__(
        self,
        *,
        open_after: float = OPEN_AFTER,
        probe_interval: float = PROBE_INTERVAL,
        timeout: float = DEFAULT_OUTAGE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.open_after = open_after
        self.probe_interval = probe_interval
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.poll = poll
        self.last_answer = clock()
        # The first "no answer" since the last answer; None while answers come.
        self.failing_since: float | None = None
        self._probing = False
        self._next_probe = 0.0
        # How often it opened, and how many probes it sent.
        self.outages = 0
        self.probes = 0
        self._was_open = False

    @property
    def is_open(self) -> bool:
        since = self.failing_since
        return since is not None and self.clock() - since >= self.open_after

    @property
    def expired(self) -> bool:
        since = self.failing_since
        return since is not None and self.clock() - since >= self.timeout

    def answered(self) -> None:
        """The service answered (success or an error body under 500)."""
        self.last_answer = self.clock()
        self.failing_since = None
        self._probing = False
        self._was_open = False

    def no_answer(self) -> None:
        """An attempt got no answer (refused, timed out, 5xx)."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        if self.is_open and not self._was_open:
            self._was_open = True
            self.outages += 1
        self._probing = False
        self._next_probe = now + self.probe_interval

    async def admit(self) -> None:
        """Return when an attempt may be sent: at once while closed, else as the probe."""
        while self.is_open:
            if self.expired:
                raise OutageOver(self.timeout)
            if not self._probing and self.clock() >= self._next_probe:
                self._probing = True
                self.probes += 1
                return
            await self.sleep(self.poll)

    async def verdict(self, since: float) -> bool:
        """After a call failed for want of answers at ``since`` (its last attempt): True
        if it is the outage's (the breaker opened), False if the service answered since."""
        while True:
            if self.last_answer > since or self.failing_since is None:
                return False
            if self.is_open:
                return True
            await self.sleep(self.poll)
