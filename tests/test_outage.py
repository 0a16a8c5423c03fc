"""The shared retry budget and the outage breaker (issue 8, item 8), on a fake clock.

End to end (an emulator process killed mid-scan): tests/test_edges_process.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from emulator_fixtures import FakeClock

from fleetscan.errors import ApiError, ClientIdError, ThrottledError, TransientError
from fleetscan.outage import BudgetEmpty, OutageBreaker, OutageOver, RetryBudget, is_no_answer
from fleetscan.records import Status
from fleetscan.retry import RetryPolicy, call_with_retry
from fleetscan.scanner import Scanner, ScanSettings

REFUSED = TransientError("ConnectionError", "refused", http_status=None)
TIMEOUT = TransientError("Timeout", "no answer in 10 s", http_status=None)
BAD_GATEWAY = TransientError("HTTP502", "<html>", http_status=502)
INTERNAL = TransientError("InternalError", "oops", http_status=417)
THROTTLED = ThrottledError("SystemOverFlow", "slow down", http_status=403)


class VirtualSleep:
    """An injected sleep that moves the fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (virtual time moves meanwhile)."""
    while True:
        if condition():
            return
        await asyncio.sleep(0)


def test_no_answer_means_refused_timed_out_or_5xx_and_nothing_else() -> None:
    assert all(is_no_answer(e) for e in (REFUSED, TIMEOUT, BAD_GATEWAY))
    assert not any(
        is_no_answer(e)
        for e in (INTERNAL, THROTTLED, ClientIdError("InvalidParameter", "x", http_status=400))
    )


def test_the_budget_charges_retries_refunds_successes_and_runs_dry() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(capacity=20, regen=2, clock=clock)
    assert budget.spend(BAD_GATEWAY) == 5
    assert budget.spend(TIMEOUT) == 10
    assert budget.tokens == 5
    assert budget.spend(REFUSED) is None  # 10 > 5: empty for this one
    assert budget.refused == 1
    # After an answer the service is alive: the limiter and the backoff pace those.
    assert budget.spend(THROTTLED) == 0
    assert budget.spend(INTERNAL) == 0
    budget.earn(0)
    assert budget.tokens == 6  # a first-try success earns 1
    budget.earn(10)
    assert budget.tokens == 16  # a success after retries earns back what they cost
    budget.earn(10)
    assert budget.tokens == 20  # never above capacity
    assert budget.spend(TIMEOUT) == budget.spend(TIMEOUT) == 10
    clock.advance(2.5)
    assert budget.tokens == 5  # 2 a second come back by themselves


async def test_an_empty_budget_stops_the_calls_retries_at_once() -> None:
    budget = RetryBudget(capacity=10, regen=0)
    sent = 0

    async def dead() -> None:
        nonlocal sent
        sent += 1
        raise REFUSED

    async def no_sleep(seconds: float) -> None:
        pass

    policy = RetryPolicy(max_attempts=6)
    with pytest.raises(BudgetEmpty) as first:
        await call_with_retry(dead, policy=policy, budget=budget, sleep=no_sleep)
    assert (sent, first.value.error.attempts, budget.tokens) == (2, 2, 0)  # one retry paid
    assert first.value.error.code == "ConnectionError"
    with pytest.raises(BudgetEmpty) as second:
        await call_with_retry(dead, policy=policy, budget=budget, sleep=no_sleep)
    assert (sent, second.value.error.attempts) == (3, 1)  # no retry: the budget is empty


async def test_the_breaker_opens_without_answers_probes_one_at_a_time_and_closes() -> None:
    clock = FakeClock(0.0)
    breaker = OutageBreaker(open_after=5, probe_interval=1, timeout=60, clock=clock, poll=0.1)
    breaker.sleep = VirtualSleep(clock)
    breaker.no_answer()
    clock.advance(4.9)
    breaker.no_answer()
    assert not breaker.is_open  # 4.9 s: a passing blip
    clock.advance(0.1)
    assert breaker.is_open
    # Open: one caller goes as the probe once the interval has passed, the rest wait.
    breaker.no_answer()
    callers = [asyncio.create_task(breaker.admit()) for _ in range(3)]
    await until(lambda: any(c.done() for c in callers))
    assert sum(c.done() for c in callers) == 1  # one probe; the others wait
    assert breaker.probes == 1
    # The probe is refused: the next probe no sooner than a second later.
    start = clock()
    breaker.no_answer()
    await until(lambda: sum(c.done() for c in callers) == 2)
    assert clock() - start >= 1.0
    assert breaker.probes == 2
    assert sum(c.done() for c in callers) == 2
    # The service answers: the breaker closes and everyone goes at once.
    breaker.answered()
    assert not breaker.is_open
    await asyncio.wait_for(asyncio.gather(*callers), 1)
    await asyncio.wait_for(breaker.admit(), 1)


async def test_the_breaker_gives_up_after_the_outage_timeout() -> None:
    clock = FakeClock(0.0)
    breaker = OutageBreaker(open_after=5, probe_interval=1, timeout=30, clock=clock)
    breaker.sleep = VirtualSleep(clock)
    breaker.no_answer()
    clock.advance(6)
    await breaker.admit()  # the probe

    async def refuse_every_probe() -> None:
        while True:
            breaker.no_answer()
            await breaker.admit()

    with pytest.raises(OutageOver, match="no answer for 30 s"):
        await refuse_every_probe()
    assert clock() >= 30


async def test_a_verdict_blames_the_id_when_the_service_answered_meanwhile() -> None:
    clock = FakeClock(0.0)
    breaker = OutageBreaker(open_after=5, clock=clock)
    breaker.sleep = VirtualSleep(clock)
    started = clock()
    breaker.no_answer()
    clock.advance(1)
    breaker.answered()  # another call got its answer
    assert await breaker.verdict(started) is False
    breaker.no_answer()
    failed_at = clock()
    assert await breaker.verdict(failed_at) is False  # one failure alone: the ID's
    for _ in range(5):
        breaker.no_answer()
    assert await breaker.verdict(failed_at) is True  # nothing answers: the outage's
    assert clock() >= 5


# --- the scanner with a service that dies and comes back, in virtual time ------------------


class Service:
    """A fake client: answers, then refuses every connection while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.sent = 0
        self.sent_while_down = 0

    async def query_session(self, client_id: str) -> Any:
        self.sent += 1
        await asyncio.sleep(0)
        if self.down:
            self.sent_while_down += 1
            raise TransientError("ConnectionError", "refused", http_status=None)
        return _Answer()


class _Answer:
    online = True
    request_id = "r"


def virtual_scanner(
    service: Service, clock: FakeClock, *, outage_timeout: float, concurrency: int = 8
) -> Scanner:
    settings = ScanSettings(
        instance_id="mqtt-cn-x",
        qps=500,
        concurrency=concurrency,
        outage_timeout=outage_timeout,
        retry=RetryPolicy(max_attempts=6, backoff_base=0.0, backoff_max=0.0),
    )
    breaker = OutageBreaker(timeout=outage_timeout, clock=clock, sleep=VirtualSleep(clock))
    return Scanner(
        client=service,  # type: ignore[arg-type]
        settings=settings,
        breaker=breaker,
        budget=RetryBudget(capacity=50, clock=clock),
        monotonic=clock,
    )


async def run_until(
    scanner: Scanner, client_ids: list[str], during: Callable[[list[Any]], Awaitable[None]]
) -> list[Any]:
    records: list[Any] = []
    task = asyncio.create_task(scanner.run(client_ids, emit=records.append))
    try:
        async with asyncio.timeout(30):  # a hang is a failure, not a stuck suite
            await during(records)
            await task
    finally:
        task.cancel()
    return records


async def test_an_outage_that_ends_costs_no_error_record_and_the_scan_goes_on() -> None:
    clock = FakeClock(0.0)
    service = Service()
    scanner = virtual_scanner(service, clock, outage_timeout=300)
    client_ids = [f"GID_fleet@@@d{i}" for i in range(400)]

    async def outage(records: list[Any]) -> None:
        await until(lambda: len(records) >= 50)
        service.down = True
        await until(lambda: scanner.breaker.probes >= 5)  # open, probing once a second
        service.down = False

    records = await run_until(scanner, client_ids, outage)
    assert scanner.outcome == "completed"
    assert sorted(r.client_id for r in records) == sorted(client_ids)
    assert all(r.status is Status.ONLINE for r in records)
    # While down: the first attempts of the calls in flight, a few budgeted retries, and
    # one probe at a time; not a retry storm.
    assert service.sent_while_down <= 8 * 6 + 10, service.sent_while_down


async def test_an_outage_past_its_timeout_stops_the_scan_leaving_ids_for_resume() -> None:
    clock = FakeClock(0.0)
    service = Service()
    scanner = virtual_scanner(service, clock, outage_timeout=60)
    client_ids = [f"GID_fleet@@@d{i}" for i in range(400)]

    async def dies(records: list[Any]) -> None:
        await until(lambda: len(records) >= 50)
        service.down = True

    records = await run_until(scanner, client_ids, dies)
    assert scanner.outcome == "aborted"
    assert isinstance(scanner.abort_error, OutageOver)
    assert all(r.status is Status.ONLINE for r in records)  # no error record for the outage
    assert scanner.counters.errors == 0
    assert clock() >= 60
    # Probes at about one a second over the minute, not one per worker per backoff.
    assert service.sent_while_down <= 8 * 6 + 70, service.sent_while_down


def test_an_api_error_is_an_answer() -> None:
    clock = FakeClock(0.0)
    breaker = OutageBreaker(open_after=5, clock=clock)
    breaker.no_answer()
    clock.advance(3)
    assert isinstance(INTERNAL, ApiError)
    breaker.answered()  # what the scanner does for an error body under 500
    clock.advance(3)
    assert not breaker.is_open
