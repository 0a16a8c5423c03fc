"""RateLimiter: the sliding-window guarantee, the sustained rate, AIMD.

Most tests run on an event loop with a virtual clock (`virtual_loop`): a timer
"fires" by moving the clock, optionally late by a random amount to stand in for a
busy loop. One short test runs on the real clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable

import pytest
from aiolimiter import AsyncLimiter
from virtual_loop import VirtualClock, max_in_window, run_virtual

from fleetscan.limiter import (
    DECREASE_FACTOR,
    INCREASE_SHARE,
    JITTER_S,
    STEP_S,
    RateLimiter,
    bucket_shape,
)


async def acquisition_times(
    acquire: Callable[[], Awaitable[None]],
    *,
    seconds: float,
    workers: int = 40,
    at: Callable[[float], None] | None = None,
) -> list[float]:
    """Loop times of every acquisition by ``workers`` tasks for ``seconds``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds
    times: list[float] = []

    async def worker() -> None:
        while loop.time() < end:
            await acquire()
            now = loop.time()
            times.append(now - start)
            if at is not None:
                at(now - start)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return sorted(times)


def steady_rate(times: list[float], *, after: float) -> float:
    steady = [t for t in times if t >= after]
    return (len(steady) - 1) / (steady[-1] - steady[0])


def test_the_virtual_loop_reports_a_deadlock_instead_of_hanging() -> None:
    # A limiter test that waits on something nothing will set must fail, not spin.
    async def stuck() -> None:
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="deadlock"):
        run_virtual(VirtualClock(), stuck)


def test_window_counter_sees_the_naive_limiters_double_burst() -> None:
    # The yardstick itself: AsyncLimiter(qps, 1) lets ~2x qps through its first second.
    clock = VirtualClock()
    times = run_virtual(clock, lambda: acquisition_times(AsyncLimiter(100, 1).acquire, seconds=3))
    assert max_in_window(times, 1.0) > 190


@pytest.mark.parametrize("qps", [1, 7.5, 100, 300, 500])
@pytest.mark.parametrize("lateness", [0.0, 0.003])
def test_no_window_exceeds_qps_and_the_rate_holds(qps: float, lateness: float) -> None:
    seconds = 30 if qps < 10 else 6
    clock = VirtualClock(lateness=lateness)
    limiter = RateLimiter(qps, clock=clock)
    times = run_virtual(clock, lambda: acquisition_times(limiter.acquire, seconds=seconds))
    # Any window shorter than 1 + J holds at most qps (ceil for a fractional qps).
    assert max_in_window(times, 1.0 + JITTER_S - 1e-9) <= math.ceil(qps)
    # Wake-ups late by up to LATENESS_S are caught up, so the rate does not sag.
    rate = steady_rate(times, after=2.0)
    assert 0.99 * qps <= rate <= qps


def test_a_busy_loop_gets_the_rate_the_credit_covers() -> None:
    # Every loop iteration takes 6 ms: fewer a second than the 270 permits. A timer
    # grants the waiters every permit the bucket holds at once; passed on one per
    # iteration (a lock), the limiter gave 166/s.
    clock = VirtualClock(iteration=0.006)
    limiter = RateLimiter(270, adaptive=False, credit=0.05)
    times = run_virtual(clock, lambda: acquisition_times(limiter.acquire, seconds=6, workers=150))
    capacity, leak = bucket_shape(270, 270, 0.05)
    assert steady_rate(times, after=2.0) >= 0.99 * leak
    # Never more than the bucket's bound: capacity + leak * W in any window W.
    assert max_in_window(times, 1.0) < capacity + leak


def test_the_credit_is_no_burst_at_the_start() -> None:
    # Half a second of credit at 100/s: an empty bucket would let 51 go at once.
    clock = VirtualClock()
    limiter = RateLimiter(100, adaptive=False, credit=0.5)
    times = run_virtual(clock, lambda: acquisition_times(limiter.acquire, seconds=2))
    assert limiter.capacity == pytest.approx(51)
    assert max_in_window(times, 0.1) <= 11  # the first permit, then the pace


def test_a_waiter_cancelled_in_the_queue_leaves_the_others_their_permits() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(10, adaptive=False)

    async def main() -> list[int]:
        got: list[int] = []

        async def one(i: int) -> None:
            await limiter.acquire()
            got.append(i)

        tasks = [asyncio.create_task(one(i)) for i in range(6)]
        await asyncio.sleep(0)  # all queued: the first leads, the others wait
        tasks[1].cancel()  # waiting behind the lead
        tasks[2].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(limiter.acquire(), 5)  # the limiter still hands out
        return got

    assert run_virtual(clock, main) == [0, 3, 4, 5]


def test_bucket_shape_meets_the_window_bound_exactly() -> None:
    for qps in (1, 50, 100, 300, 500, 1000):
        capacity, leak = bucket_shape(qps, qps)
        assert capacity >= 1.0
        assert capacity + leak * (1.0 + JITTER_S) == pytest.approx(qps + 1)


async def test_real_clock_short_run() -> None:
    limiter = RateLimiter(200)
    times = await acquisition_times(limiter.acquire, seconds=1.2, workers=20)
    assert max_in_window(times, 1.0) <= 200
    # Loose: a loaded CI machine may lag, but pacing must not stall or run away.
    assert 200 <= len([t for t in times if t < 1.2]) <= 1.2 * 200 + 2


def test_a_cut_and_the_climb_back_never_open_a_burst() -> None:
    qps = 100
    clock = VirtualClock(lateness=0.002)
    limiter = RateLimiter(qps, clock=clock)
    rates: list[tuple[float, float]] = []

    def at(t: float) -> None:
        if 3.0 <= t < 3.5:
            limiter.on_throttled()  # a burst of throttled answers: one cut
        elif t >= 4.0:
            limiter.on_success()
        if not rates or rates[-1][1] != limiter.current_rate:
            rates.append((t, limiter.current_rate))

    times = run_virtual(clock, lambda: acquisition_times(limiter.acquire, seconds=16, at=at))
    assert [r for _, r in rates[:2]] == [qps, qps * DECREASE_FACTOR]
    # Back to qps in +5%-of-qps steps, one per STEP_S.
    assert rates[-1][1] == qps
    assert len(rates) == 2 + round((1 - DECREASE_FACTOR) / INCREASE_SHARE)
    assert max_in_window(times, 1.0 + JITTER_S - 1e-9) <= qps
    # Paced at the lowered rate while cut (from the swap until the first raise).
    cut_rate = steady_rate([t for t in times if 3.2 <= t < 4.0], after=3.2)
    assert cut_rate == pytest.approx(qps * DECREASE_FACTOR, rel=0.03)
    # No two acquisitions closer than half a spacing after start-up: a swap that
    # forgot the old fill would admit one at once.
    gaps = [b - a for a, b in itertools.pairwise(times) if a > 1.0]
    assert min(gaps) > 0.5 / qps


def test_aimd_steps() -> None:
    now = [0.0]
    limiter = RateLimiter(200, clock=lambda: now[0])
    assert limiter.current_rate == 200
    limiter.on_success()  # at qps already: nothing to raise
    assert limiter.current_rate == 200

    limiter.on_throttled()
    assert limiter.current_rate == pytest.approx(140)
    now[0] = 0.5
    limiter.on_throttled()  # same burst
    limiter.on_success()  # too soon after a cut
    assert limiter.current_rate == pytest.approx(140)

    now[0] = 1.0 + STEP_S
    limiter.on_success()
    assert limiter.current_rate == pytest.approx(150)
    now[0] += STEP_S / 2
    limiter.on_success()
    assert limiter.current_rate == pytest.approx(150)
    limiter.on_throttled()  # a raise does not shield the next cut
    assert limiter.current_rate == pytest.approx(105)


def test_aimd_floor_and_ceiling() -> None:
    now = [0.0]
    limiter = RateLimiter(100, clock=lambda: now[0])
    for _ in range(30):
        now[0] += STEP_S
        limiter.on_throttled()
    assert limiter.current_rate == pytest.approx(5.0)  # 5% of qps
    for _ in range(40):
        now[0] += STEP_S
        limiter.on_success()
    assert limiter.current_rate == 100

    small = RateLimiter(4, clock=lambda: now[0])
    for _ in range(10):
        now[0] += STEP_S
        small.on_throttled()
    assert small.current_rate == 1.0  # never below 1/s


def test_not_adaptive_ignores_throttling() -> None:
    limiter = RateLimiter(50, adaptive=False)
    limiter.on_throttled()
    assert limiter.current_rate == 50


def test_rejects_a_non_positive_qps() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
