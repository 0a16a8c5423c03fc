"""Address budgets and account pacers: the margins, composition, the guard at the wire.

Pacing runs on the virtual loop of `virtual_loop` (seconds pass only when the loop
waits; `VirtualClock.stall` blocks it). "Sends" are the moments a call would be
written; "arrivals" are sends delayed by a random 0-40 ms, as the jitter proxy of the
benchmarks delays them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from virtual_loop import VirtualClock, max_in_window, run_virtual

from fleetscan.errors import UsageError
from fleetscan.limiter import RateLimiter
from fleetscan.limits import MAX_QPS
from fleetscan.pacing import (
    ACCOUNT_PACE,
    ADDRESS_LIMIT,
    ARRIVAL_JITTER_S,
    DEFAULT_ADDRESS_BUDGET,
    AccountPacer,
    AddressBudget,
    CompositePacer,
    Pacer,
    SendGuard,
    check_address_budget,
    jitter_allowance,
    lane_rates,
    pace_under,
    worst_second,
)

Send = Callable[[], Awaitable[None]]


def arrivals(sends: list[float], *, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return sorted(t + rng.uniform(0.0, ARRIVAL_JITTER_S) for t in sends)


async def run_lanes(
    lanes: dict[str, tuple[Pacer, int]],
    *,
    seconds: float,
    before_send: Send | None = None,
    at_wire: Callable[[str], Send] | None = None,
) -> dict[str, list[float]]:
    """Send times per lane: ``workers`` tasks per lane acquire from the lane's pacer,
    then pass ``before_send`` (a held-back step) and ``at_wire(lane)``, then send."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    sends: dict[str, list[float]] = {name: [] for name in lanes}

    async def worker(name: str, pacer: Pacer) -> None:
        while loop.time() < end:
            await pacer.acquire()
            if before_send is not None:
                await before_send()
            if at_wire is not None:
                await at_wire(name)()
            sends[name].append(loop.time())

    await asyncio.gather(
        *(worker(name, pacer) for name, (pacer, n) in lanes.items() for _ in range(n))
    )
    return sends


# --- the margins ---------------------------------------------------------------------


def test_the_default_budget_keeps_40_ms_of_jitter_under_the_block() -> None:
    assert DEFAULT_ADDRESS_BUDGET == 270
    assert ADDRESS_LIMIT == 300
    assert worst_second(DEFAULT_ADDRESS_BUDGET) == 280
    assert jitter_allowance(DEFAULT_ADDRESS_BUDGET) > 0.11
    # The old single default had 4 ms: 40 ms of jitter could put 311 in one second.
    assert worst_second(300) > ADDRESS_LIMIT


def test_account_paces_are_the_highest_that_stay_within_the_limits_under_jitter() -> None:
    assert ACCOUNT_PACE == {"single": 482, "batch": 96}
    for mode, pace in ACCOUNT_PACE.items():
        assert worst_second(pace) <= MAX_QPS[mode] < worst_second(pace + 1)
    assert pace_under(300, jitter=0.004) == 300  # the limiter's own 4 ms: the old default


def test_a_budget_over_the_block_is_refused_with_the_reason() -> None:
    assert check_address_budget(270) == 270.0
    assert check_address_budget(300) == 300.0
    for bad in (301, 0, -5):
        with pytest.raises(UsageError, match="at most 300 calls/s") as caught:
            check_address_budget(bad)
        assert "blocks the address" in str(caught.value)
    with pytest.raises(ValueError, match="within"):
        AddressBudget(301)
    with pytest.raises(ValueError, match="within"):
        AccountPacer("batch", 101)


# --- the guard -----------------------------------------------------------------------


def test_send_guard_waits_for_the_oldest_call_in_each_window_to_leave() -> None:
    guard = SendGuard([(3, 1.0), (4, 2.0)])
    for t in (0.0, 0.1, 0.2):
        assert guard.wait(t) == 0.0
        guard.record(t)
    assert guard.wait(0.5) == pytest.approx(0.5)  # the 3rd latest (0.0) leaves at 1.0
    guard.record(1.0)
    # Now 4 in the last 2 s: the 4th latest (0.0) leaves that window at 2.0.
    assert guard.wait(1.1) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="count"):
        SendGuard([(0, 1.0)])


@pytest.mark.parametrize("lateness", [0.0, 0.02])
def test_send_guard_alone_never_lets_a_window_overflow_on_late_wake_ups(lateness: float) -> None:
    clock = VirtualClock(lateness=lateness)
    guard = SendGuard([(50, 1.0), (10, 0.1)])
    sends = run_virtual(clock, lambda: run_lanes({"x": (_Admit(guard), 30)}, seconds=5))["x"]
    assert max_in_window(sends, 1.0) <= 50
    assert max_in_window(sends, 0.1) <= 10
    assert len(sends) >= 5 * 50 * 0.9  # late wake-ups cost rate, not the bound


class _Admit:
    """A pacer that is nothing but a guard."""

    def __init__(self, guard: SendGuard) -> None:
        self.guard = guard

    async def acquire(self) -> None:
        await self.guard.admit()

    def on_throttled(self) -> None:
        pass

    def on_success(self) -> None:
        pass


# --- a late or busy loop --------------------------------------------------------------


def test_late_wake_ups_cost_the_address_budget_no_slots() -> None:
    # A scan waiting for a CPU wakes up late, here up to 10 ms each time. With 4 ms of
    # catch-up the address lost a slot at each such wake-up (205/s of 270); its
    # CATCH_UP_S makes up for it, and the guard keeps what goes out within the bounds.
    clock = VirtualClock(lateness=0.010)
    pacer = CompositePacer(AddressBudget(270), AccountPacer("single", clock=clock))
    sends = run_virtual(clock, lambda: run_lanes({"single": (pacer, 150)}, seconds=8))["single"]
    assert len([t for t in sends if 2.0 <= t < 8.0]) / 6.0 >= 0.97 * 270
    assert max_in_window(sends, 1.0) <= 270
    assert max_in_window(sends, 1.0 + ARRIVAL_JITTER_S) <= ADDRESS_LIMIT
    assert max_in_window(arrivals(sends), 1.0) <= ADDRESS_LIMIT


def test_a_busy_loop_still_gets_the_address_budget() -> None:
    # Every loop iteration takes 4 ms (many callbacks each): fewer iterations a second
    # than the address allows calls. Passed from waiter to waiter one per iteration (a
    # lock in each bucket and guard), the calls got 250/s of 270.
    clock = VirtualClock(iteration=0.004)
    pacer = CompositePacer(AddressBudget(270), AccountPacer("single", clock=clock))
    sends = run_virtual(clock, lambda: run_lanes({"single": (pacer, 150)}, seconds=8))["single"]
    assert len([t for t in sends if 2.0 <= t < 8.0]) / 6.0 >= 0.99 * 267.8
    assert max_in_window(sends, 1.0) <= 270
    assert max_in_window(arrivals(sends), 1.0) <= ADDRESS_LIMIT


def test_a_busy_loop_still_gives_each_hybrid_lane_its_pace() -> None:
    # The same loop, two lanes through one address: each account pacer's permits come
    # from a timer, not passed from task to task (a lock, then a leader handing on its
    # place: an iteration or two a permit, which outlasted the 4 ms of credit of the
    # account buckets: 86% of the batch pace).
    clock = VirtualClock(iteration=0.004)
    address = AddressBudget(270)
    rates = lane_rates()
    lanes: dict[str, tuple[Pacer, int]] = {
        mode: (CompositePacer(address, AccountPacer(mode, rates[mode], clock=clock)), workers)
        for mode, workers in (("batch", 40), ("single", 120))
    }
    sends = run_virtual(clock, lambda: run_lanes(lanes, seconds=8))
    for mode, rate in rates.items():
        assert len([t for t in sends[mode] if 2.0 <= t < 8.0]) / 6.0 >= 0.97 * rate
    both = sorted(sends["batch"] + sends["single"])
    assert max_in_window(both, 1.0) <= 270
    assert max_in_window(arrivals(both), 1.0) <= ADDRESS_LIMIT
    assert max_in_window(arrivals(sends["batch"]), 1.0) <= MAX_QPS["batch"]


def test_the_guard_lets_every_free_slot_go_in_one_loop_iteration() -> None:
    # 20 loop iterations a second, 50 calls a second allowed: a lock passed from waiter
    # to waiter let 188 of the 250 through in 5 s.
    clock = VirtualClock(iteration=0.05)
    guard = SendGuard([(50, 1.0)])
    sends = run_virtual(clock, lambda: run_lanes({"x": (_Admit(guard), 60)}, seconds=5))["x"]
    assert max_in_window(sends, 1.0) <= 50
    assert len(sends) >= 0.9 * 5 * 50


# --- at the wire, through a stalled loop ----------------------------------------------


def held_back_and_stalled(clock: VirtualClock) -> tuple[Send, Callable[[], None]]:
    """A step between permit and wire that is now and then held for 0.2 s (a token
    refresh holding the workers), and loop stalls of 0.3 s (a GC pause, a busy CPU)."""
    gate = asyncio.Event()
    gate.set()

    async def before_send() -> None:
        await gate.wait()

    def start() -> None:
        loop = asyncio.get_running_loop()
        for at in (1.5, 3.0, 4.5):
            loop.call_later(at, gate.clear)
            loop.call_later(at + 0.2, gate.set)
        for at in (2.2, 3.9):
            loop.call_later(at, clock.stall, 0.3)

    return before_send, start


def test_a_held_back_and_stalled_loop_never_puts_more_than_the_budget_on_the_wire() -> None:
    clock = VirtualClock(lateness=0.001)
    before_send, start = held_back_and_stalled(clock)
    budget = AddressBudget(270)
    budget.trace_config()  # the guard moves to the wire: called below where aiohttp would

    async def main() -> dict[str, list[float]]:
        start()
        return await run_lanes(
            {"single": (budget, 150)},
            seconds=6,
            before_send=before_send,
            at_wire=lambda _: budget.guard.admit,
        )

    sends = run_virtual(clock, main)["single"]
    assert max_in_window(sends, 1.0) <= 270
    assert max_in_window(sends, 1.0 + ARRIVAL_JITTER_S) <= ADDRESS_LIMIT
    assert max_in_window(arrivals(sends), 1.0) <= ADDRESS_LIMIT
    assert len(sends) >= 0.8 * 270 * 6  # held 0.6 s and stalled 0.6 s of the 6


def test_without_the_guard_the_same_run_puts_a_burst_on_the_wire() -> None:
    # The scenario above bites: a bucket alone hands out permits on time, and the
    # held-back calls leave together.
    clock = VirtualClock(lateness=0.001)
    before_send, start = held_back_and_stalled(clock)
    bucket = RateLimiter(270, adaptive=False)

    async def main() -> dict[str, list[float]]:
        start()
        return await run_lanes({"single": (bucket, 150)}, seconds=6, before_send=before_send)

    sends = run_virtual(clock, main)["single"]
    assert max_in_window(sends, 1.0 + ARRIVAL_JITTER_S) > ADDRESS_LIMIT


# --- composition ----------------------------------------------------------------------


def test_two_apis_through_one_address_hold_the_budget_and_each_account_ceiling() -> None:
    clock = VirtualClock(lateness=0.002)
    address = AddressBudget(270)
    # The single lane paced at what the address leaves (270 - 96): paced at its account
    # rate, its workers would crowd the address's queue (FIFO) and starve the batch lane.
    single = AccountPacer("single", lane_rates()["single"], clock=clock)
    batch = AccountPacer("batch", clock=clock)
    lanes: dict[str, tuple[Pacer, int]] = {
        "single": (CompositePacer(address, single), 120),
        "batch": (CompositePacer(address, batch), 40),
    }
    sends = run_virtual(clock, lambda: run_lanes(lanes, seconds=8))
    both = sorted(sends["single"] + sends["batch"])
    assert max_in_window(both, 1.0) <= 270
    assert max_in_window(arrivals(both), 1.0) <= ADDRESS_LIMIT
    assert max_in_window(arrivals(sends["batch"]), 1.0) <= MAX_QPS["batch"]
    steady = [t for t in both if 2.0 <= t < 8.0]
    assert len(steady) / 6.0 >= 0.97 * 270
    # The batch lane gets its pace; the single lane what the address leaves.
    batch_rate = len([t for t in sends["batch"] if 2.0 <= t < 8.0]) / 6.0
    assert batch_rate == pytest.approx(ACCOUNT_PACE["batch"], rel=0.03)


def test_two_addresses_share_the_account_ceiling() -> None:
    clock = VirtualClock(lateness=0.002)
    single = AccountPacer("single", clock=clock)
    a, b = AddressBudget(270, address="127.0.0.2"), AddressBudget(270, address="127.0.0.3")
    lanes: dict[str, tuple[Pacer, int]] = {
        "a": (CompositePacer(a, single), 150),
        "b": (CompositePacer(b, single), 150),
    }
    sends = run_virtual(clock, lambda: run_lanes(lanes, seconds=6))
    for name in ("a", "b"):
        assert max_in_window(sends[name], 1.0) <= 270
    both = sorted(sends["a"] + sends["b"])
    # 540 of address budget, 482 of account pace: the account binds.
    assert max_in_window(arrivals(both), 1.0) <= MAX_QPS["single"]
    assert len([t for t in both if 2.0 <= t < 6.0]) / 4.0 >= 0.97 * ACCOUNT_PACE["single"]


def test_throttling_lowers_the_api_pacer_not_the_address_budget() -> None:
    now = [0.0]
    address = AddressBudget(270)
    single = AccountPacer("single", clock=lambda: now[0])
    batch = AccountPacer("batch", clock=lambda: now[0])
    single_lane, batch_lane = CompositePacer(address, single), CompositePacer(address, batch)
    for _ in range(5):
        now[0] += 1.0
        batch_lane.on_throttled()
        single_lane.on_success()
    assert batch.current_rate < ACCOUNT_PACE["batch"] * 0.2
    assert single.current_rate == ACCOUNT_PACE["single"]
    # The address keeps its budget: its bucket and its guard are as built.
    assert address.budget == 270
    assert address.guard.rules == ((270, 1.0), (300, 1.0 + ARRIVAL_JITTER_S))

    # And on the loop: throttled through the batch lane, the address still lets the
    # single lane use what batch left.
    clock = VirtualClock()
    fresh = AddressBudget(270)
    cut = AccountPacer("batch", clock=clock)
    throttled_lane = CompositePacer(fresh, cut)
    for _ in range(4):
        clock.now += 1.0
        throttled_lane.on_throttled()
    lanes: dict[str, tuple[Pacer, int]] = {
        "single": (CompositePacer(fresh, AccountPacer("single", clock=clock)), 120),
        "batch": (throttled_lane, 40),
    }
    sends = run_virtual(clock, lambda: run_lanes(lanes, seconds=5))
    total = len([t for t in sends["single"] + sends["batch"] if 6.0 <= t < 9.0])
    assert total / 3.0 >= 0.97 * 270


def test_lane_rates_split_the_address_budgets_batch_first() -> None:
    assert lane_rates() == {"batch": 96, "single": 174}
    assert lane_rates(2) == {"batch": 96, "single": 444}
    assert lane_rates(3) == {"batch": 96, "single": 482}  # the account binds
    assert lane_rates(1, 50) == {"batch": 50, "single": 0}
    with pytest.raises(UsageError):
        lane_rates(1, 301)


def test_a_composite_needs_a_pacer() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CompositePacer()


# --- the hook in aiohttp ---------------------------------------------------------------


async def test_the_trace_config_guards_every_request_of_its_session_once() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    budget = AddressBudget(270)
    try:
        async with aiohttp.ClientSession(trace_configs=[budget.trace_config()]) as session:
            for _ in range(5):  # one new connection, then reused ones
                await budget.acquire()
                async with session.post(f"http://127.0.0.1:{port}/") as response:
                    assert response.status == 200

            # Two at once: a second connection is opened while the first is busy.
            async def one() -> None:
                await budget.acquire()
                async with session.post(f"http://127.0.0.1:{port}/") as response:
                    await response.read()

            await asyncio.gather(one(), one())
    finally:
        await runner.cleanup()
    # acquire no longer records; the hook did, once per request.
    assert len(budget.guard.sent()) == 7
