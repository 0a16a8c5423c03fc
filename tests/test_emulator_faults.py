"""Injected faults: rates from a seeded generator, rules, drops, latency, changes mid-run."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest
from emulator_fixtures import SleepRecorder, ids, serving

from fleetscan.emulator import (
    DROP,
    EmulatorConfig,
    FaultRule,
    Faults,
)
from fleetscan.emulator.control import EmulatorControl
from fleetscan.emulator.faults import FaultInjector

CID = "GID_test@@@dev1"
MIXED = Faults(error_rate=0.1, unavailable_rate=0.1, overflow_rate=0.2, drop_rate=0.1)


def _outcomes(faults: Faults, seed: int, n: int = 2000) -> list[str]:
    injector = FaultInjector(EmulatorControl(EmulatorConfig(faults=faults)), seed=seed)
    out = []
    for _ in range(n):
        fate = injector.fate("QuerySessionByClientId", [CID])
        out.append("drop" if fate.drop else fate.error.code if fate.error else "ok")
    return out


def test_fault_rates_are_honoured_and_repeat_with_the_seed() -> None:
    first = _outcomes(MIXED, seed=7)
    counts = Counter(first)
    assert 150 <= counts["InternalError"] <= 250
    assert 150 <= counts["ServiceUnavailable"] <= 250
    assert 320 <= counts["SystemOverFlow"] <= 480
    assert 150 <= counts["drop"] <= 250
    assert 850 <= counts["ok"] <= 1150
    assert _outcomes(MIXED, seed=7) == first
    assert _outcomes(MIXED, seed=8) != first


def test_no_faults_by_default() -> None:
    assert set(_outcomes(Faults(), seed=0, n=500)) == {"ok"}


def test_overflow_carries_retry_after_for_its_share() -> None:
    faults = Faults(overflow_rate=1.0, overflow_retry_after_share=0.25, overflow_retry_after_ms=80)
    injector = FaultInjector(EmulatorControl(EmulatorConfig(faults=faults)), seed=1)
    hints = [injector.fate("QuerySessionByClientId", [CID]).error for _ in range(1000)]
    with_hint = [e for e in hints if e is not None and e.retry_after_ms == 80]
    assert all(e is not None and e.code == "SystemOverFlow" for e in hints)
    assert 180 <= len(with_hint) <= 320


def test_latency_is_base_plus_jitter_plus_a_slow_tail() -> None:
    faults = Faults(latency_ms=10, jitter_ms=5, slow_rate=0.1, slow_ms=1000)
    injector = FaultInjector(EmulatorControl(EmulatorConfig(faults=faults)), seed=3)
    delays = [injector.fate("QuerySessionByClientId", [CID]).delay for _ in range(1000)]
    fast = [d for d in delays if d < 1.0]
    slow = [d for d in delays if d >= 1.0]
    assert all(0.010 <= d < 0.015 for d in fast)
    assert all(1.010 <= d < 1.015 for d in slow)
    assert 60 <= len(slow) <= 140
    assert max(fast) - min(fast) > 0.003  # jitter is spread, not constant


async def test_faults_over_http_with_statuses_and_headers() -> None:
    rules = (
        FaultRule(code="InternalError"),
        FaultRule(code="ServiceUnavailable"),
        FaultRule(code="SystemOverFlow", retry_after_ms=40),
        FaultRule(code="Throttling.User", status=400),
    )
    async with serving(EmulatorConfig(rules=rules)) as (emu, caller):
        replies = [await caller.single(CID) for _ in range(5)]
        stats = emu.stats().actions["QuerySessionByClientId"]
    assert [(r.status, r.code) for r in replies] == [
        (417, "InternalError"),
        (503, "ServiceUnavailable"),
        (403, "SystemOverFlow"),
        (400, "Throttling.User"),
        (200, None),
    ]
    assert replies[2].headers["x-acs-retry-after"] == "40"
    assert (stats.faulted, stats.successes, stats.requests) == (4, 1, 5)


async def test_dropped_connection_sends_no_response() -> None:
    async with serving(EmulatorConfig(rules=(FaultRule(code=DROP),))) as (emu, caller):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await caller.single(CID)
        after = await caller.single(CID)
        stats = emu.stats().actions["QuerySessionByClientId"]
    assert after.status == 200
    assert (stats.dropped, stats.faulted, stats.successes) == (1, 1, 1)


async def test_random_drops_over_http() -> None:
    async with serving(EmulatorConfig(faults=Faults(drop_rate=1.0))) as (_, caller):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await caller.single(CID)


async def test_latency_uses_the_injected_sleep() -> None:
    sleep = SleepRecorder()
    faults = Faults(latency_ms=20, jitter_ms=10)
    async with serving(EmulatorConfig(faults=faults), sleep=sleep) as (_, caller):
        for cid in ids(5):
            assert (await caller.single(cid)).status == 200
    assert len(sleep.delays) == 5
    assert all(0.020 <= d < 0.030 for d in sleep.delays)


async def test_slow_tail_can_exceed_a_client_timeout() -> None:
    faults = Faults(slow_rate=1.0, slow_ms=2000)
    async with serving(EmulatorConfig(faults=faults), clock=None) as (emu, caller):
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.2):
                await caller.single(CID)
        emu.control.set_faults(slow_rate=0.0)
        assert (await caller.single(CID)).status == 200


async def test_rule_fails_the_first_k_attempts_for_one_id() -> None:
    rule = FaultRule(code="InternalError", times=2, client_id="GID_test@@@dev3")
    async with serving(EmulatorConfig(rules=(rule,))) as (emu, caller):
        others = [await caller.single(cid) for cid in ids(3)]
        in_batch = await caller.batch(ids(5))
        single = await caller.single("GID_test@@@dev3")
        third = await caller.single("GID_test@@@dev3")
        settings = emu.control.settings()
    assert all(r.status == 200 for r in others)
    assert in_batch.code == single.code == "InternalError"
    assert third.status == 200
    assert settings["rules"][0]["remaining"] == 0


async def test_rule_for_every_id_and_one_action() -> None:
    rule = FaultRule(code="ServiceUnavailable", times=3, action="BatchQuerySessionByClientIds")
    async with serving(EmulatorConfig(rules=(rule,))) as (_, caller):
        single = await caller.single(CID)
        batches = [await caller.batch(ids(2)) for _ in range(4)]
    assert single.status == 200
    assert [r.status for r in batches] == [503, 503, 503, 200]


async def test_rules_and_rates_change_mid_run() -> None:
    async with serving() as (emu, caller):
        assert (await caller.single(CID)).status == 200
        emu.control.set_faults(error_rate=1.0)
        assert (await caller.single(CID)).code == "InternalError"
        emu.control.set_faults(error_rate=0.0)
        emu.control.add_rule(FaultRule(code="SystemOverFlow"))
        assert (await caller.single(CID)).code == "SystemOverFlow"
        async with caller.session.post(
            f"{caller.url}_emulator/config",
            json={"faults": {"unavailable_rate": 1.0}, "rules": [{"code": "InternalError"}]},
        ) as response:
            assert response.status == 200
        assert (await caller.single(CID)).code == "InternalError"  # the rule first
        assert (await caller.single(CID)).code == "ServiceUnavailable"
        async with caller.session.post(
            f"{caller.url}_emulator/config", json={"faults": {"no_such_rate": 1}}
        ) as response:
            assert response.status == 400
            assert "no_such_rate" in (await response.json())["error"]


def test_invalid_fault_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="add up"):
        Faults(error_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="times"):
        FaultRule(code="InternalError", times=-1)
