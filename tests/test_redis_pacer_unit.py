"""The shared pacer without a server: its URL, keys, and how it spends leased permits.

A fake link answers as the script would; the clock and sleep are fakes, so time is
virtual. What only a real Redis can show is in test_redis_pacer.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from redis_fixtures import redis_binary

from fleetscan.errors import LimiterLostError, UsageError
from fleetscan.limiter import JITTER_S
from fleetscan.redis_pacer import PASSWORD_ENV, RedisLink, RedisPacer, parse_limiter_url
from fleetscan.redis_pacer.keys import account_digest, address_key, aimd_key, api_key
from fleetscan.redis_pacer.pacer import CATCH_UP_AFTER
from fleetscan.redis_pacer.script import SPEND_WINDOW_S, floor_share, interval_us

SERVER_NOW = 1_800_000_000_000_000  # µs, the fake server's time of day


class FakeTime:
    """A clock that moves only by sleeping, late by ``lateness`` on every sleep."""

    def __init__(self, start: float = 100.0, *, lateness: float = 0.0) -> None:
        self.now = start
        self.lateness = lateness
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.lateness
        await asyncio.sleep(0)


class FakeLink:
    """Grants ``per_call`` permits spaced ``spacing_us``, as the script would."""

    shown = "redis://fake:6379/0"

    def __init__(self, clock: FakeTime, *, spacing_us: int = 10_000, share: float = 1.0) -> None:
        self.clock = clock
        self.spacing_us = spacing_us
        self.share = share
        self.calls: list[list[str]] = []
        self._last = -(10**12)  # µs of the last slot granted, on the local clock

    async def run(self, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        self.calls.append(list(args))
        now = round(self.clock.now * 1e6)
        want, reach = int(args[0]), int(args[1])
        offsets: list[int] = []
        wait = 0
        for _ in range(want):
            slot = max(now, self._last + self.spacing_us)
            if slot - now > reach:
                wait = 0 if offsets else slot - now - reach
                break
            offsets.append(slot - now)
            self._last = slot
        return [SERVER_NOW + now, wait, round(self.share * 1e6), *offsets]


def pacer(link: FakeLink, clock: FakeTime, **kwargs: object) -> tuple[RedisPacer, list[int]]:
    slots: list[int] = []
    made = RedisPacer(
        link,  # type: ignore[arg-type]
        keys=("k:aimd", "k"),
        qps=100,
        clock=clock,
        sleep=clock.sleep,
        on_grant=slots.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return made, slots


async def test_permits_are_spent_at_their_slots_not_at_once() -> None:
    clock = FakeTime()
    link = FakeLink(clock)
    p, slots = pacer(link, clock, lease=8)
    spent: list[float] = []
    for _ in range(8):
        await p.acquire()
        spent.append(clock.now)
    # One caller: one permit a lease, and one lease ahead.
    assert len(link.calls) == 9
    assert all(args[0] == "1" for args in link.calls)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(spent)]
    assert gaps == [0.01] * 7
    assert [b - a for a, b in itertools.pairwise(slots)] == [10_000] * 7


async def test_a_lease_asks_for_as_many_permits_as_callers_wait_up_to_its_size() -> None:
    clock = FakeTime()
    link = FakeLink(clock)
    p, _ = pacer(link, clock, lease=4)
    await asyncio.gather(*(p.acquire() for _ in range(10)))
    wants = [int(args[0]) for args in link.calls]
    assert wants[0] == 4  # ten waiting, capped at the lease
    assert max(wants) == 4
    assert 10 <= sum(wants) <= 10 + 4  # and at most one lease ahead


async def test_a_permit_woken_for_too_late_is_dropped_not_spent() -> None:
    clock = FakeTime(lateness=SPEND_WINDOW_S * 1.5)  # every sleep ends 6 ms late
    link = FakeLink(clock)
    p, slots = pacer(link, clock, lease=3)
    spent: list[float] = []
    for _ in range(6):
        await p.acquire()
        spent.append(clock.now)
    assert p.dropped > 0
    assert p.granted == 6  # and it went on: after a drop, permits spent at once
    # The fake server's clock is the local one shifted: each slot's local due time.
    due = [(slot - SERVER_NOW) / 1e6 for slot in slots]
    assert all(0 <= s - d <= SPEND_WINDOW_S for s, d in zip(spent, due, strict=True))


class LateAWhile(FakeTime):
    """Late on its first five wake-ups (a busy CPU), then on time."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if len(self.sleeps) >= 5:
            self.lateness = 0.0


class BusyLink(FakeLink):
    """Other processes keep the budget leased 200 ms ahead: nothing is free at once."""

    async def run(self, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        if len(self.calls) > 100:
            raise AssertionError("the pacer kept asking for what never comes")
        now = round(self.clock.now * 1e6)
        self._last = max(self._last, now + 200_000)
        return await super().run(keys, args)


async def test_a_late_pacer_beside_busy_processes_leases_ahead_again() -> None:
    # Late on every wake-up, the pacer drops permits and asks for some to spend at
    # once; with the budget leased ahead by others none ever is, and it asked again
    # and again while the others took the whole budget. It goes back to leasing.
    clock = LateAWhile(lateness=SPEND_WINDOW_S * 1.5)
    link = BusyLink(clock)
    p, _ = pacer(link, clock, lease=3)
    for _ in range(6):
        await p.acquire()
    assert p.dropped >= CATCH_UP_AFTER  # it did try to catch up
    assert p.granted == 6
    assert any(args[1] == "0" for args in link.calls)  # asked for permits at once ...
    assert int(link.calls[-1][1]) > 0  # ... then leased ahead again


async def test_the_host_clock_s_time_of_day_changes_nothing() -> None:
    schedules = []
    for start in (100.0, 100.0 + 7.0, 100.0 - 7.0):  # hosts disagreeing by seconds
        clock = FakeTime(start)
        link = FakeLink(clock)
        p, _ = pacer(link, clock, lease=4)
        spent = []
        for _ in range(6):
            await p.acquire()
            spent.append(round(clock.now - start, 9))
        schedules.append(spent)
    assert schedules[0] == schedules[1] == schedules[2]


async def test_answers_are_reported_with_the_next_lease_then_forgotten() -> None:
    clock = FakeTime()
    link = FakeLink(clock, share=0.7)
    p, _ = pacer(link, clock, lease=1)
    for _ in range(5):
        p.on_success()
    for _ in range(3):
        p.on_throttled()
    await p.acquire()
    assert link.calls[-1][6:8] == ["8", "3"]  # answers, throttled
    assert p.current_rate == pytest.approx(70.0)
    await p.acquire()
    assert link.calls[-1][6:8] == ["0", "0"]


async def test_a_pacer_that_does_not_adapt_reports_nothing() -> None:
    clock = FakeTime()
    link = FakeLink(clock)
    p, _ = pacer(link, clock, adaptive=False)
    p.on_throttled()
    p.on_success()
    await p.acquire()
    assert link.calls[-1][5:8] == ["0", "0", "0"]


def test_the_tick_keeps_the_local_pacer_s_margin() -> None:
    # A window of 1 + JITTER_S + SPEND_WINDOW_S meets at most ceil(W / T) + 1 ticks,
    # one slot each: never more than qps (script.py, points 1 and 3).
    window = 1 + JITTER_S + SPEND_WINDOW_S
    for qps in (2, 7, 100, 300, 500):
        t = interval_us(qps) / 1e6
        assert math.ceil(window / t) + 1 <= qps
        assert 1 / t == pytest.approx((qps - 1) / window, rel=1e-3)  # sustained (µs ticks)
    with pytest.raises(ValueError, match="2 calls/s or more"):
        interval_us(1.5)
    assert floor_share(500) == pytest.approx(0.05)
    assert floor_share(10) == pytest.approx(0.1)  # MIN_RATE 1/s
    assert floor_share(0.5) == 1.0


@pytest.mark.parametrize(
    ("url", "shown", "user", "password"),
    [
        ("redis://redis:6379/0", "redis://redis:6379/0", None, None),
        ("redis://localhost", "redis://localhost/0", None, None),
        ("rediss://:pa%40ss@r.example:6380/2", "rediss://r.example:6380/2", None, "pa@ss"),
        ("redis://scan:pw@10.0.0.5:7000/1", "redis://10.0.0.5:7000/1", "scan", "pw"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0", None, None),
    ],
)
def test_limiter_urls_are_read_and_shown_without_credentials(
    url: str, shown: str, user: str | None, password: str | None
) -> None:
    parsed = parse_limiter_url(url, environ={})
    assert parsed.shown == shown
    assert (parsed.username, parsed.password) == (user, password)
    if password:
        assert password not in parsed.url
        assert password not in repr(parsed)


def test_the_password_may_come_from_the_environment_and_the_url_wins() -> None:
    env = {PASSWORD_ENV: "from-env"}
    assert parse_limiter_url("redis://h:1/0", environ=env).password == "from-env"
    assert parse_limiter_url("redis://:inline@h:1/0", environ=env).password == "inline"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://:hunter2@h:1/0", "not http://"),
        ("h:6379", "redis://"),
        ("redis://:hunter2@/0", "names no host"),
        ("redis://:hunter2@h:1/x", "database is a number"),
        ("redis://:hunter2@h:99999/0", "cannot be read"),
        ("rediss://:hunter2@h:1/0?ssl_cert_reqs=none", "no \\?parameters"),
    ],
)
def test_a_bad_limiter_url_is_refused_without_echoing_it(url: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as caught:
        parse_limiter_url(url, environ={})
    assert "hunter2" not in str(caught.value)


def test_keys_name_a_digest_of_the_account_never_the_access_key_id() -> None:
    ak = "LTAI5tSecretLookingId"
    keys = [api_key("{fs}", ak, "Q"), aimd_key("{fs}", ak, "Q")]
    assert all(ak not in key and account_digest(ak) in key for key in keys)
    assert api_key("{fs}", ak, "Q") != api_key("{fs}", ak + "2", "Q")
    assert api_key("{fs}", ak, "Q") != api_key("{fs}", ak, "B")
    # The address's budget is the address's, whichever account sends from it.
    assert address_key("{fs}", "nat-1") == "{fs}:addr:nat-1:slots"


class _Dead:
    def register_script(self, script: str) -> object:
        async def call(**_: object) -> object:
            raise ConnectionRefusedError("Connection refused")

        return call


async def test_a_lost_server_is_retried_with_backoff_then_the_scan_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeTime()
    link = RedisLink(
        _Dead(), shown="redis://h:1/0", limiter_timeout=5.0, clock=clock, sleep=clock.sleep
    )
    with caplog.at_level(logging.WARNING, "fleetscan"), pytest.raises(LimiterLostError):
        await link.run(["a", "b"], ["0"])
    assert sum(clock.sleeps) == pytest.approx(5.0)
    assert clock.sleeps[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8])
    assert max(clock.sleeps) == 1.0
    assert "unreachable" in caplog.text
    # Once lost, it stays lost: the next call fails at once.
    before = len(clock.sleeps)
    with pytest.raises(LimiterLostError, match="unreachable for 5 s"):
        await link.run(["a", "b"], ["0"])
    assert len(clock.sleeps) == before


def test_without_redis_server_its_tests_skip_saying_why_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server there
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        redis_binary()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: needs redis-server"):
        redis_binary()
