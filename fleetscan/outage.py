"""A dead service costs seconds, not hours: the shared retry budget and the outage
breaker.

- `RetryBudget` is the AWS SDKs' standard retry quota: the scan holds 500 tokens; a
  retry after a 5xx costs 5, after a timeout or a dropped connection 10; a success
  earns back what its retries cost, or 1, and 10 tokens come back each second. An
  empty budget stops a call's retries at once (`BudgetEmpty`); its remaining
  attempts wait for tokens, so the budget caps the rate of retries, never an ID's
  number of attempts: nothing becomes an ``error`` record for want of tokens.
  Retries after an answer (throttling, ``InternalError``) are not charged: the
  service is alive, and the limiter and the backoff pace them; charging them emptied
  the budget under 10% faults with 64 calls in flight, each holding its tokens until
  its retry succeeded.
- `OutageBreaker` watches answers across the whole scan. A refused connection, a
  timeout or a 5xx is "no answer"; anything else the server says is an answer. After
  ``open_after`` seconds with no answer it opens: nothing is sent but one probe at a
  time, one every ``probe_interval`` seconds; the first answer closes it and the scan
  goes on. A call that failed for want of answers asks `verdict` before it is
  recorded as an error: if the service answered meanwhile, the error is the ID's;
  if the breaker opened after ``evidence`` unanswered attempts or more, it is the
  outage's, and the ID is asked again later. After
  ``timeout`` seconds without an answer the breaker gives up (`OutageOver`) and the
  scan stops, leaving those IDs without a record for ``--resume``.

Both run on an injected clock and sleep, so tests drive them in virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fleetscan.errors import ApiError, TransientError

__all__ = [
    "DEFAULT_OUTAGE_TIMEOUT",
    "BudgetEmpty",
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
# Tokens that come back by themselves each second, so a scan whose every call waits for
# tokens still moves: one retry after no answer a second.
REGEN_PER_SECOND = 10.0

# Seconds without any answer, across the scan, before the breaker opens ...
OPEN_AFTER = 5.0
# ... and failed attempts in that time before a failed call is blamed on an outage: the
# last call of a scan, failing alone, is the ID's error as before.
OUTAGE_EVIDENCE = 5
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
        regen: float = REGEN_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self._tokens = float(capacity)
        self.regen = regen
        self.clock = clock
        self._at = clock()
        self.retry_cost = retry_cost
        self.no_answer_cost = no_answer_cost
        self.refund = refund
        # Retries refused for want of tokens.
        self.refused = 0

    def cost_of(self, error: BaseException) -> int:
        if not is_no_answer(error):
            return 0  # the service answered (throttled, InternalError): it is alive
        if isinstance(error, ApiError) and error.code in _NO_ANSWER_CODES:
            return self.no_answer_cost
        return self.retry_cost

    @property
    def tokens(self) -> float:
        now = self.clock()
        if self.regen and now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.regen)
        self._at = now
        return self._tokens

    def spend(self, error: BaseException) -> int | None:
        """Take the tokens for a retry after ``error``: their number, or None if empty."""
        cost = self.cost_of(error)
        if cost > self.tokens:
            self.refused += 1
            return None
        self._tokens -= cost
        return cost

    def earn(self, spent: int) -> None:
        """A call succeeded after retries that cost ``spent`` tokens (0: none)."""
        self._tokens = min(self.capacity, self.tokens + (spent or self.refund))

    async def refilled(
        self, sleep: Callable[[float], Awaitable[object]], *, poll: float = POLL_SECONDS
    ) -> None:
        """Return once a retry after no answer could be paid for again."""
        while self.tokens < self.no_answer_cost:
            await sleep(poll)


class BudgetEmpty(Exception):
    """A call stopped retrying for want of tokens; ``error`` is its last failure.

    Not the ID's error: its remaining attempts wait until the budget has refilled.
    """

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


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
        evidence: int = OUTAGE_EVIDENCE,
    ) -> None:
        self.open_after = open_after
        self.evidence = evidence
        # Attempts without an answer since the last answer.
        self.unanswered = 0
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
        self.unanswered = 0
        self._probing = False
        self._was_open = False

    def no_answer(self) -> None:
        """An attempt got no answer (refused, timed out, 5xx)."""
        now = self.clock()
        self.unanswered += 1
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
                return self.unanswered >= self.evidence
            await self.sleep(self.poll)
