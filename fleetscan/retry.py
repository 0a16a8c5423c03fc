"""The retry policy, assembled from tenacity parts in this one place.

- **What** is retried is decided by exception class alone (`is_retryable`):
  ThrottledError and TransientError are; a ResignError once (a fresh signature
  usually cures a reused nonce; twice means a skewed clock or a bug, which the caller
  treats as account-wide); ClientIdError, AccountError and anything that is not an
  ApiError never are. CancelledError is never retried.
- **How long** to wait: the server's ``retry_after`` hint when it gave one, else
  exponential backoff with full jitter (``wait_random_exponential``); both capped.
- **When** to stop: after ``max_attempts`` attempts (the first included) or when the
  next wait would take the total past ``max_total_delay``; then the last error is
  raised, with ``attempts`` set on it.

Every attempt first takes a token from the limiter, so retries spend rate too, and
reports its answer to it (throttled: slow down; success: speed back up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from fleetscan.errors import ApiError, ResignError, ThrottledError, TransientError
from fleetscan.outage import BudgetEmpty

if TYPE_CHECKING:
    from fleetscan.limiter import RateLimiter
    from fleetscan.outage import RetryBudget

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_TOTAL_DELAY",
    "RESIGN_RETRIES",
    "RetryPolicy",
    "attempts_of",
    "call_with_retry",
    "is_retryable",
]

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS = 6
# Full jitter: the n-th wait is uniform in [0, min(max, base * 2**(n-1))] seconds.
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 10.0
# Give up on a call rather than sleep longer than this in total.
DEFAULT_MAX_TOTAL_DELAY = 60.0
# A refused nonce or timestamp is signed afresh this many times, then raised.
RESIGN_RETRIES = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one API call is retried."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    max_total_delay: float = DEFAULT_MAX_TOTAL_DELAY

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.backoff_base, self.backoff_max, self.max_total_delay) < 0:
            raise ValueError("backoff and delay limits must not be negative")


def is_retryable(exc: BaseException, *, resigns: int = 0) -> bool:
    """Whether to try again after ``exc``.

    ``resigns`` counts the call's ResignErrors so far, this one included.
    """
    if isinstance(exc, ResignError):
        return resigns <= RESIGN_RETRIES
    return isinstance(exc, ThrottledError | TransientError)


def attempts_of(exc: BaseException) -> int:
    """How many attempts the call that raised ``exc`` made (1 if it was not retried)."""
    attempts = getattr(exc, "attempts", 1)
    return attempts if isinstance(attempts, int) else 1


class _wait_hint_or(wait_base):
    """The server's ``retry_after`` when the error carries one, else ``backoff``."""

    def __init__(self, backoff: wait_base, cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.cap)
        return self.backoff(retry_state)


class _stop_after_total_delay(stop_base):
    """Stop when the upcoming wait would take the total waited past ``max_delay``."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max_delay

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self.max_delay


async def call_with_retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    limiter: RateLimiter | None = None,
    on_attempt: Callable[[BaseException | None], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    budget: RetryBudget | None = None,
) -> tuple[T, int]:
    """Run ``attempt`` until it succeeds or the policy gives up; return (result, attempts).

    ``attempt`` must sign and send afresh each time it is called. ``on_attempt`` is
    told each attempt's outcome (None on success) for counters. On final failure the
    last exception is raised; when it is an ApiError its ``attempts`` is set.
    ``budget``, shared by every call of a scan, pays for each retry; when it is empty
    the call stops at once with `BudgetEmpty` (its last error inside), and a success
    pays it back.
    """
    attempts = 0
    resigns = 0
    spent = 0
    refused: BaseException | None = None

    def retryable(exc: BaseException) -> bool:
        nonlocal resigns, spent, refused
        if isinstance(exc, ResignError):
            resigns += 1
        if not is_retryable(exc, resigns=resigns):
            return False
        if budget is not None:
            cost = budget.spend(exc)
            if cost is None:
                refused = exc
                return False  # the budget is empty: fail fast
            spent += cost
        return True

    async def once() -> T:
        nonlocal attempts
        if limiter is not None:
            await limiter.acquire()
        attempts += 1
        try:
            result = await attempt()
        except Exception as exc:
            if limiter is not None and isinstance(exc, ThrottledError):
                limiter.on_throttled()
            if on_attempt is not None:
                on_attempt(exc)
            raise
        if limiter is not None:
            limiter.on_success()
        if budget is not None:
            budget.earn(spent)
        if on_attempt is not None:
            on_attempt(None)
        return result

    # The fast path: most calls succeed at once, and running tenacity costs ~40 us a
    # call, a tenth of the hot path's budget. So tenacity only takes over once an
    # attempt has failed, replaying that failure as its own first attempt.
    try:
        return await once(), 1
    except ApiError as exc:
        if not is_retryable(exc, resigns=1):
            exc.attempts = 1
            raise
        first_failure: ApiError | None = exc

    async def replay_then_attempt() -> T:
        nonlocal first_failure
        if first_failure is not None:
            failure, first_failure = first_failure, None
            raise failure
        return await once()

    # A fresh retrying object per call: tenacity keeps per-call state on it.
    retrying = AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(policy.max_attempts)
        | _stop_after_total_delay(policy.max_total_delay),
        wait=_wait_hint_or(
            wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max),
            cap=policy.backoff_max,
        ),
        sleep=sleep,
        reraise=True,
    )
    try:
        result: T = await retrying(replay_then_attempt)
    except ApiError as exc:
        exc.attempts = attempts
        if exc is refused:
            raise BudgetEmpty(exc) from exc
        raise
    return result, attempts
