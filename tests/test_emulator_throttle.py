"""Rate limits: per account and action on every sliding second, and per source IP."""

from __future__ import annotations

import aiohttp
import pytest
from emulator_fixtures import Caller, FakeClock, ids, serving
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetscan.emulator import (
    DEFAULT_KEY,
    EmulatorConfig,
    KeyPair,
    Limits,
)
from fleetscan.emulator.answers import Refusal
from fleetscan.emulator.control import EmulatorControl
from fleetscan.emulator.throttle import IP_BLOCKED, Throttle

CID = "GID_test@@@dev1"


def _throttle(**limits: int | float | str) -> Throttle:
    return Throttle(EmulatorControl(EmulatorConfig(limits=Limits(**limits))))


def _admitted(throttle: Throttle, account: str, action: str, now: float) -> bool:
    code = None
    try:
        throttle.admit(account, action, now)
    except Refusal as refusal:
        code = refusal.code
    assert code in (None, "SystemOverFlow")
    return code is None


def test_account_limit_holds_on_every_sliding_second() -> None:
    throttle = _throttle(qps_single=5)
    single = "QuerySessionByClientId"
    # Five at 0.0 .. 0.4 fill the window; 0.5 and 0.99 are refused.
    assert all(_admitted(throttle, "a", single, t / 10) for t in range(5))
    assert not _admitted(throttle, "a", single, 0.5)
    assert not _admitted(throttle, "a", single, 0.99)
    # At 1.0 the request at 0.0 has left the window (s - 1.0, s]: one more fits.
    assert _admitted(throttle, "a", single, 1.0)
    assert not _admitted(throttle, "a", single, 1.05)
    # A calendar-second limiter would admit a burst at 1.0-1.4; this one does not.
    assert _admitted(throttle, "a", single, 1.1)
    # The batch action and other accounts have windows of their own.
    assert _admitted(throttle, "a", "BatchQuerySessionByClientIds", 1.1)
    assert _admitted(throttle, "b", single, 1.1)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=8),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=80),
)
def test_admitted_requests_never_exceed_the_limit_in_any_window(
    limit: int, gaps: list[float]
) -> None:
    throttle = _throttle(qps_single=limit)
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        before = [t for t in admitted if t > now - 1.0]
        if _admitted(throttle, "a", "QuerySessionByClientId", now):
            admitted.append(now)
            assert len(before) < limit
        else:
            # Refused only when the window already held `limit` admitted requests.
            assert len(before) >= limit
    for t in admitted:
        assert sum(1 for u in admitted if t - 1.0 < u <= t) <= limit


async def test_over_the_limit_is_system_overflow_403_without_hint_by_default() -> None:
    clock = FakeClock()
    config = EmulatorConfig(limits=Limits(qps_single=3, qps_batch=2))
    async with serving(config, clock=clock) as (emu, caller):
        singles = [await caller.single(cid) for cid in ids(4)]
        batches = [await caller.batch(ids(2)) for _ in range(3)]
        clock.advance(1.0)
        after = await caller.single(CID)
    assert [r.status for r in singles] == [200, 200, 200, 403]
    assert singles[-1].code == "SystemOverFlow"
    assert "x-acs-retry-after" not in singles[-1].headers
    assert [r.status for r in batches] == [200, 200, 403]
    assert after.status == 200
    stats = emu.stats().actions
    assert stats["QuerySessionByClientId"].throttled == 1
    assert stats["BatchQuerySessionByClientIds"].throttled == 1


async def test_throttled_answers_carry_retry_after_when_configured() -> None:
    config = EmulatorConfig(limits=Limits(qps_single=1, retry_after_ms=250))
    async with serving(config) as (_, caller):
        await caller.single(CID)
        reply = await caller.single(CID)
    assert reply.code == "SystemOverFlow"
    assert reply.headers["x-acs-retry-after"] == "250"


async def test_keys_of_one_account_share_its_limit() -> None:
    same = KeyPair(access_key_id="SAME_ACCOUNT", secret="s1")  # the default account
    other = KeyPair(access_key_id="OTHER_ACCOUNT", secret="s2", account="another")
    config = EmulatorConfig(keys=(DEFAULT_KEY, same, other), limits=Limits(qps_single=2))
    async with serving(config) as (_, caller):
        replies = [
            await caller.single(CID),
            await caller.single(CID, access_key_id="SAME_ACCOUNT", secret="s1"),
            await caller.single(CID, access_key_id="SAME_ACCOUNT", secret="s1"),
            await caller.single(CID, access_key_id="OTHER_ACCOUNT", secret="s2"),
        ]
    assert [r.status for r in replies] == [200, 200, 403, 200]


async def test_limits_change_mid_run() -> None:
    clock = FakeClock()
    async with serving(EmulatorConfig(limits=Limits(qps_single=1)), clock=clock) as (
        emu,
        caller,
    ):
        assert [(await caller.single(c)).status for c in ids(2)] == [200, 403]
        emu.control.set_limits(qps_single=3)
        assert [(await caller.single(c)).status for c in ids(3)] == [200, 200, 403]
        clock.advance(1.0)
        async with caller.session.post(
            f"{caller.url}_emulator/config", json={"limits": {"qps_single": 1}}
        ) as response:
            assert (await response.json())["limits"]["qps_single"] == 1
        assert [(await caller.single(c)).status for c in ids(2)] == [200, 403]


# --- per source IP ---------------------------------------------------------------------


def test_ip_over_the_limit_is_blocked_with_a_clear_message() -> None:
    throttle = _throttle()  # the documented 300/s, blocked for the default minute
    for i in range(300):
        throttle.check_ip("192.0.2.1", "QuerySessionByClientId", i / 1000)
    with pytest.raises(Refusal) as caught:
        throttle.check_ip("192.0.2.1", "QuerySessionByClientId", 0.5)
    assert caught.value.code == IP_BLOCKED == "Forbidden.SourceIpBlocked"
    message = caught.value.message or ""
    assert "192.0.2.1" in message
    assert "blocked for 60 seconds" in message
    assert "exceeding 300 calls per second" in message
    # Blocked for every action, until the block ends.
    with pytest.raises(Refusal):
        throttle.check_ip("192.0.2.1", "BatchQuerySessionByClientIds", 60.4)
    throttle.check_ip("192.0.2.1", "BatchQuerySessionByClientIds", 60.5)


def test_ip_limit_counts_all_apis_together_by_default() -> None:
    throttle = _throttle(ip_limit=3)
    throttle.check_ip("192.0.2.1", "QuerySessionByClientId", 0.0)
    throttle.check_ip("192.0.2.1", "BatchQuerySessionByClientIds", 0.1)
    throttle.check_ip("192.0.2.1", "QuerySessionByClientId", 0.2)
    with pytest.raises(Refusal) as caught:
        throttle.check_ip("192.0.2.1", "BatchQuerySessionByClientIds", 0.3)
    assert "exceeding 3 calls per second of all APIs together" in (caught.value.message or "")
    throttle.check_ip("192.0.2.2", "QuerySessionByClientId", 0.3)  # another IP: its own


def test_ip_limit_per_api_when_asked_and_can_be_off() -> None:
    throttle = _throttle(ip_limit=2, ip_limit_scope="action")
    for action in ("QuerySessionByClientId", "BatchQuerySessionByClientIds"):
        throttle.check_ip("192.0.2.1", action, 0.0)
        throttle.check_ip("192.0.2.1", action, 0.1)
    with pytest.raises(Refusal) as caught:
        throttle.check_ip("192.0.2.1", "QuerySessionByClientId", 0.2)
    assert "of QuerySessionByClientId from one IP" in (caught.value.message or "")
    with pytest.raises(ValueError, match="ip_limit_scope must be one of all, action"):
        Limits(ip_limit_scope="each")
    off = _throttle(ip_limit=0)
    for i in range(1000):
        off.check_ip("192.0.2.1", "QuerySessionByClientId", i / 10_000)


async def test_ip_block_over_http_spares_other_ips() -> None:
    clock = FakeClock()
    config = EmulatorConfig(limits=Limits(ip_limit=3, ip_block_seconds=30))
    async with (
        serving(config, clock=clock) as (emu, caller),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as session2,
    ):
        other_ip = Caller(session2, emu.url, clock=clock)
        first = [await caller.single(cid) for cid in ids(4)]
        batch_blocked = await caller.batch(ids(2))
        # Even a request that would fail authentication is answered "blocked".
        bad_key = await caller.single(CID, secret="wrong")
        from_other = await other_ip.single(CID)
        clock.advance(29)
        still = await caller.single(CID)
        clock.advance(1)
        free = await caller.single(CID)
        stats = emu.stats()
    assert [r.status for r in first] == [200, 200, 200, 403]
    blocked = first[-1]
    assert blocked.code == "Forbidden.SourceIpBlocked"
    assert "127.0.0.1" in blocked.body["Message"]
    assert "exceeding 3 calls per second" in blocked.body["Message"]
    assert "30 seconds" in blocked.body["Message"]
    assert batch_blocked.code == bad_key.code == still.code == "Forbidden.SourceIpBlocked"
    assert from_other.status == 200
    assert free.status == 200
    assert stats.actions["QuerySessionByClientId"].blocked == 3
    assert set(stats.ips) == {"127.0.0.1", "127.0.0.2"}


async def test_unblock_through_the_control() -> None:
    config = EmulatorConfig(limits=Limits(ip_limit=1, ip_block_seconds=3600))
    async with serving(config) as (emu, caller):
        await caller.single(CID)
        assert (await caller.single(CID)).code == "Forbidden.SourceIpBlocked"
        emu.control.unblock_ips()
        emu.control.set_limits(ip_limit=0)
        assert (await caller.single(CID)).status == 200
