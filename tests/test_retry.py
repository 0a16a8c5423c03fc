"""call_with_retry: what is retried, how long it waits (recorded, never slept), counts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from fleetscan.errors import (
    AccountError,
    ApiError,
    ClientIdError,
    ResignError,
    ThrottledError,
    TransientError,
)
from fleetscan.limiter import DECREASE_FACTOR, RateLimiter
from fleetscan.retry import (
    RetryPolicy,
    attempts_of,
    call_with_retry,
    is_retryable,
)

POLICY = RetryPolicy()


class Script:
    """An attempt that raises the scripted errors in turn, then answers "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    """A sleep that records its waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class CountingLimiter(RateLimiter):
    def __init__(self, qps: float, clock: Callable[[], float]) -> None:
        super().__init__(qps, clock=clock)
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()


def throttled(retry_after: float | None = None) -> ThrottledError:
    return ThrottledError("Throttling.User", "slow down", http_status=400, retry_after=retry_after)


def transient() -> TransientError:
    return TransientError("Timeout", "no answer", http_status=None)


def resign() -> ResignError:
    return ResignError("SignatureNonceUsed", "nonce used", http_status=400)


async def run(
    attempt: Callable[[], Awaitable[str]], policy: RetryPolicy = POLICY, **kwargs: object
) -> tuple[tuple[str, int], Sleeps]:
    sleeps = Sleeps()
    result = await call_with_retry(attempt, policy=policy, sleep=sleeps, **kwargs)  # type: ignore[arg-type]
    return result, sleeps


async def test_success_first_time_needs_no_wait() -> None:
    (value, attempts), sleeps = await run(Script())
    assert (value, attempts) == ("ok", 1)
    assert sleeps.waits == []


@pytest.mark.parametrize("error", [throttled, transient])
async def test_throttled_and_transient_are_retried(error: Callable[[], ApiError]) -> None:
    script = Script(error(), error())
    (value, attempts), sleeps = await run(script)
    assert (value, attempts, script.calls) == ("ok", 3, 3)
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize(
    "error",
    [
        ClientIdError("InvalidParameter.ClientId", "bad", http_status=400),
        AccountError("InstanceNotFound", "no such instance", http_status=400),
    ],
)
async def test_request_and_account_errors_are_never_retried(error: ApiError) -> None:
    script = Script(error)
    sleeps = Sleeps()
    with pytest.raises(type(error)) as caught:
        await call_with_retry(script, policy=POLICY, sleep=sleeps)
    assert script.calls == 1
    assert sleeps.waits == []
    assert attempts_of(caught.value) == 1


async def test_other_exceptions_pass_through_untouched() -> None:
    script = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        await call_with_retry(script, policy=POLICY, sleep=Sleeps())
    assert script.calls == 1


async def test_resign_is_retried_once_then_raised_as_is() -> None:
    (value, attempts), _ = await run(Script(resign()))
    assert (value, attempts) == ("ok", 2)

    script = Script(resign(), resign(), resign())
    with pytest.raises(ResignError) as caught:
        await call_with_retry(script, policy=POLICY, sleep=Sleeps())
    assert script.calls == 2
    assert attempts_of(caught.value) == 2
    # Other retryable errors in between do not use up the one re-sign.
    (value, attempts), _ = await run(Script(throttled(), resign(), transient()))
    assert (value, attempts) == ("ok", 4)


async def test_cancellation_is_never_retried() -> None:
    script = Script(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await call_with_retry(script, policy=POLICY, sleep=Sleeps())
    assert script.calls == 1


async def test_cancelled_while_backing_off() -> None:
    script = Script(transient(), transient())

    async def cancelled_sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await call_with_retry(script, policy=POLICY, sleep=cancelled_sleep)
    assert script.calls == 1


async def test_server_hint_is_the_wait_and_is_capped() -> None:
    policy = RetryPolicy(backoff_max=5.0)
    _, sleeps = await run(Script(throttled(0.25), throttled(30.0)), policy)
    assert sleeps.waits == [0.25, 5.0]


async def test_backoff_has_full_jitter_in_a_doubling_window() -> None:
    policy = RetryPolicy(max_attempts=7, backoff_base=0.5, backoff_max=4.0, max_total_delay=1e9)
    seen: list[list[float]] = []
    for _ in range(40):
        _, sleeps = await run(Script(*[transient() for _ in range(6)]), policy)
        seen.append(sleeps.waits)
    highs = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for waits in seen:
        assert len(waits) == 6
        assert all(0.0 <= w <= high for w, high in zip(waits, highs, strict=True))
    # Jitter: not a fixed schedule, and the window really grows.
    assert len({waits[0] for waits in seen}) > 30
    assert max(waits[3] for waits in seen) > 0.5


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    errors = [throttled() for _ in range(10)]
    script = Script(*errors)
    sleeps = Sleeps()
    with pytest.raises(ThrottledError) as caught:
        await call_with_retry(script, policy=RetryPolicy(max_attempts=4), sleep=sleeps)
    assert script.calls == 4
    assert len(sleeps.waits) == 3
    assert caught.value is errors[3]
    assert attempts_of(caught.value) == 4


async def test_gives_up_before_waiting_past_the_total_delay() -> None:
    policy = RetryPolicy(max_attempts=10, max_total_delay=10.0)
    script = Script(*[throttled(4.0) for _ in range(10)])
    sleeps = Sleeps()
    with pytest.raises(ThrottledError) as caught:
        await call_with_retry(script, policy=policy, sleep=sleeps)
    assert sleeps.waits == [4.0, 4.0]
    assert attempts_of(caught.value) == 3


async def test_every_attempt_takes_a_token_and_reports_to_the_limiter() -> None:
    now = [0.0]
    limiter = CountingLimiter(1000, clock=lambda: now[0])
    (_, attempts), _ = await run(Script(throttled(), transient()), limiter=limiter)
    assert attempts == limiter.acquired == 3
    assert limiter.current_rate == pytest.approx(1000 * DECREASE_FACTOR)
    now[0] += 60.0  # a clean answer long after the cut raises the rate again
    await run(Script(), limiter=limiter)
    assert limiter.current_rate > 1000 * DECREASE_FACTOR


async def test_on_attempt_sees_every_outcome() -> None:
    outcomes: list[BaseException | None] = []
    first, second = throttled(), transient()
    await run(Script(first, second), on_attempt=outcomes.append)
    assert outcomes == [first, second, None]


def test_decision_by_class() -> None:
    assert is_retryable(throttled())
    assert is_retryable(transient())
    assert is_retryable(resign(), resigns=1)
    assert not is_retryable(resign(), resigns=2)
    assert not is_retryable(ClientIdError("InvalidParameter", "", http_status=400))
    assert not is_retryable(AccountError("Forbidden.RAM", "", http_status=403))
    assert not is_retryable(asyncio.CancelledError())
    assert not is_retryable(ApiError("Odd", "", http_status=400))


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(backoff_max=-1)


async def test_one_attempt_policy_never_retries() -> None:
    script = Script(throttled())
    sleeps = Sleeps()
    with pytest.raises(ThrottledError) as caught:
        await call_with_retry(script, policy=RetryPolicy(max_attempts=1), sleep=sleeps)
    assert (script.calls, sleeps.waits, attempts_of(caught.value)) == (1, [], 1)
