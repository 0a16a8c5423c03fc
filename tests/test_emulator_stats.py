"""Counters outside the API path: per action and IP, window maxima, per client ID."""

from __future__ import annotations

import aiohttp
from emulator_fixtures import Caller, FakeClock, ids, serving
from hypothesis import given
from hypothesis import strategies as st

from fleetscan.emulator import EmulatorConfig, FaultRule, Limits
from fleetscan.window import SlidingWindow

SINGLE = "QuerySessionByClientId"
BATCH = "BatchQuerySessionByClientIds"


@given(st.lists(st.floats(min_value=0.0, max_value=0.7), max_size=200))
def test_window_peak_is_the_exact_maximum(gaps: list[float]) -> None:
    window, times, now = SlidingWindow(), [], 0.0
    for gap in gaps:
        now += gap
        times.append(now)
        window.add(now)
    # Brute force: the most events in any window (s, s + 1] (one ending at an event).
    expected = max((sum(1 for u in times if t - 1.0 < u <= t) for t in times), default=0)
    assert window.peak == expected


def test_window_edges() -> None:
    window = SlidingWindow()
    assert [window.add(t) for t in (0.0, 0.5, 0.999, 1.0, 1.5, 1.999)] == [1, 2, 3, 3, 3, 3]
    assert window.peak == 3
    assert window.count(3.0) == 0


async def test_counters_per_action_and_billable_successes() -> None:
    clock = FakeClock()
    config = EmulatorConfig(
        limits=Limits(qps_single=3),
        rules=(FaultRule(code="InternalError", action=BATCH),),
    )
    async with serving(config, clock=clock) as (emu, caller):
        for cid in ids(4):  # three admitted, one throttled
            await caller.single(cid)
        await caller.single("bad id")  # throttled before its ID is checked
        clock.advance(1)
        await caller.single("bad id")  # rejected: invalid ID
        await caller.single("GID_test@@@dev0", secret="wrong")  # rejected: signature
        await caller.batch(ids(3))  # faulted by the rule
        await caller.batch(ids(10))  # success: one transaction for ten IDs
        await caller.call("NoSuchAction", {})
        stats = emu.stats()
    single, batch = stats.actions[SINGLE], stats.actions[BATCH]
    assert (single.requests, single.successes, single.throttled, single.rejected) == (7, 3, 2, 2)
    assert (batch.requests, batch.successes, batch.faulted, batch.ids_answered) == (2, 1, 1, 10)
    assert stats.actions["(unsupported)"].requests == 1
    assert stats.requests == 10
    assert stats.successes == 4
    assert single.max_requests_1s == 5
    assert single.max_successes_1s == 3


async def test_client_id_counts_and_requeried() -> None:
    rule = FaultRule(code="InternalError", client_id="GID_test@@@dev1")
    async with serving(EmulatorConfig(rules=(rule,))) as (emu, caller):
        await caller.batch(ids(3))  # fails: carries dev1
        await caller.batch(ids(3))  # the retry succeeds
        await caller.single("GID_test@@@dev5")
        await caller.single("GID_test@@@dev6", secret="wrong")  # never reached the service
        stats = emu.stats()
    assert stats.client_id_queries == {
        "GID_test@@@dev0": 2,
        "GID_test@@@dev1": 2,
        "GID_test@@@dev2": 2,
        "GID_test@@@dev5": 1,
    }
    assert stats.client_id_answers == {
        "GID_test@@@dev0": 1,
        "GID_test@@@dev1": 1,
        "GID_test@@@dev2": 1,
        "GID_test@@@dev5": 1,
    }
    assert stats.requeried() == ["GID_test@@@dev0", "GID_test@@@dev1", "GID_test@@@dev2"]


async def test_client_id_counting_can_be_off() -> None:
    async with serving(EmulatorConfig(count_client_ids=False)) as (emu, caller):
        await caller.single("GID_test@@@dev1")
        stats = emu.stats()
    assert stats.successes == 1
    assert stats.client_id_queries == {}


async def test_window_maxima_per_source_ip() -> None:
    clock = FakeClock()
    async with (
        serving(clock=clock) as (emu, caller),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as session2,
    ):
        other = Caller(session2, emu.url, clock=clock)
        for step in range(6):  # 127.0.0.1: two requests every 0.4 s
            await caller.single(f"GID_test@@@a{step}")
            await caller.single(f"GID_test@@@b{step}")
            if step < 2:
                await other.batch(ids(2))
            clock.advance(0.4)
        stats = emu.stats()
    one = stats.ips["127.0.0.1"][SINGLE]
    two = stats.ips["127.0.0.2"][BATCH]
    # Events at 0, 0.4, 0.8 (two each) fit one window (s, s+1]; 1.2 pushes out 0.
    assert (one.requests, one.max_requests_1s, one.max_successes_1s) == (12, 6, 6)
    assert (two.requests, two.successes, two.max_requests_1s) == (2, 2, 2)
    assert SINGLE not in stats.ips["127.0.0.2"]


async def test_per_ip_totals_count_every_api_together() -> None:
    clock = FakeClock()
    async with (
        serving(clock=clock) as (emu, caller),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as session2,
    ):
        other = Caller(session2, emu.url, clock=clock)
        for step in range(3):  # 127.0.0.1: a single and a batch call every 0.5 s
            await caller.single(f"GID_test@@@a{step}")
            await caller.batch(ids(3))
            clock.advance(0.5)
        await other.single("GID_test@@@b")
        stats = emu.stats()
        served = stats.as_dict()
    one = stats.ip_totals["127.0.0.1"]
    # Per API at most 2 in any second (0, 0.5); together 4.
    assert stats.ips["127.0.0.1"][SINGLE].max_requests_1s == 2
    assert stats.ips["127.0.0.1"][BATCH].max_requests_1s == 2
    assert (one.requests, one.successes, one.max_requests_1s, one.max_successes_1s) == (6, 6, 4, 4)
    assert stats.ip_totals["127.0.0.2"].requests == 1
    assert served["ip_totals"]["127.0.0.1"]["max_requests_1s"] == 4


async def test_stats_reset_and_config_endpoints() -> None:
    async with serving() as (emu, caller):
        await caller.single("GID_test@@@dev1")
        await caller.batch(ids(2))
        async with caller.session.get(f"{caller.url}_emulator/stats") as response:
            served = await response.json()
        in_process = emu.stats().as_dict()
        async with caller.session.get(
            f"{caller.url}_emulator/stats", params={"client_ids": "0"}
        ) as response:
            without_ids = await response.json()
        async with caller.session.post(f"{caller.url}_emulator/reset") as response:
            assert response.status == 200
        after = emu.stats()
        async with caller.session.get(f"{caller.url}_emulator/config") as response:
            settings = await response.json()
    assert served == in_process
    assert set(served) == {
        "requests",
        "successes",
        "actions",
        "ips",
        "ip_totals",
        "client_id_queries",
        "client_id_answers",
    }
    # The control endpoints themselves are not API requests.
    assert served["requests"] == 2
    assert served["successes"] == 2
    assert served["actions"][SINGLE]["successes"] == 1
    assert served["client_id_queries"]["GID_test@@@dev1"] == 2
    assert "client_id_queries" not in without_ids
    assert (after.requests, after.successes, after.client_id_queries) == (0, 0, {})
    assert settings["limits"]["qps_single"] == 500
    assert "fleetscan-demo-secret" not in str(settings)
