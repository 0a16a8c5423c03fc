"""``--mode hybrid``: a batch lane and a single lane on one admission queue, against the
emulator at the service's limits (500 single, 100 batch, 300/s per source IP over all
APIs). The bounds asserted are ceilings, which a busy machine only makes easier to hold.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from emulator_fixtures import ids

from fleetscan.client import connect
from fleetscan.credentials import Credentials
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    run_emulator,
)
from fleetscan.engine import ScanJob, Scanner, ScanSettings, Target
from fleetscan.errors import UsageError
from fleetscan.limiter import RateLimiter
from fleetscan.limits import BATCH_API, MAX_QPS, SINGLE_API
from fleetscan.pacing import ADDRESS_LIMIT
from fleetscan.records import Record, Status

DEMO = Credentials(
    access_key_id=DEFAULT_ACCESS_KEY_ID,
    access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
    source="the emulator's demo key",
)


def test_hybrid_settings_pace_the_lanes_from_the_address_budget() -> None:
    settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode="hybrid")
    assert settings.lane_rates == {"batch": 96, "single": 174}
    assert settings.rate == 270
    assert (settings.lane_workers("batch"), settings.lane_workers("single")) == (49, 88)
    assert settings.api == f"{BATCH_API}+{SINGLE_API}"
    with pytest.raises(UsageError, match=r"^--qps 100 sets one API's rate; --mode hybrid"):
        ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode="hybrid", qps=100)
    with pytest.raises(UsageError, match="leaves nothing for the single lane"):
        ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode="hybrid", address_budget=90)
    with pytest.raises(ValueError, match="lane_pacers"):
        Scanner(client=None, settings=settings, pacer=RateLimiter(10))  # type: ignore[arg-type]


@pytest.mark.slow
async def test_hybrid_answers_every_id_once_from_both_lanes_within_the_limits() -> None:
    client_ids = ids(2400)
    async with run_emulator(EmulatorConfig()) as emu:
        async with connect(
            instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=emu.url
        ) as client:
            settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode="hybrid")
            scanner = Scanner(client=client, settings=settings)
            records: list[Record] = []
            outcome = await scanner.run(client_ids, emit=records.append)
        stats = emu.stats()
        truth = {c: emu.fleet.is_online(c) for c in client_ids}
    assert outcome == "completed"
    # One record per ID, with its true status (no churn: batch's cache is the truth).
    assert sorted(r.client_id for r in records) == sorted(client_ids)
    assert all(r.status in (Status.ONLINE, Status.OFFLINE) for r in records)
    assert {r.client_id: r.online for r in records} == truth
    # Both lanes answered, each its share; the emulator counts what each lane counted.
    by_api = Counter(r.api for r in records)
    assert set(by_api) == {SINGLE_API, BATCH_API}
    assert by_api[SINGLE_API] > 100
    assert by_api[BATCH_API] > 1000
    lanes = scanner.counters.lanes
    for api in (SINGLE_API, BATCH_API):
        assert lanes[api].calls_sent == stats.actions[api].requests
        assert lanes[api].calls_succeeded == stats.actions[api].successes
        assert stats.actions[api].throttled == stats.actions[api].blocked == 0
    assert stats.actions[SINGLE_API].successes == by_api[SINGLE_API]
    # Under the account limits and the block, as the emulator measured it.
    assert stats.actions[BATCH_API].max_requests_1s <= MAX_QPS["batch"]
    assert stats.actions[SINGLE_API].max_requests_1s <= MAX_QPS["single"]
    (address,) = stats.ip_totals.values()
    assert address.max_requests_1s <= ADDRESS_LIMIT
    # Every ID asked exactly once.
    assert set(stats.client_id_queries.values()) == {1}


async def scan_with_a_stale_batch_cache(
    mode: str, *, confirm: bool, count: int = 400
) -> tuple[list[Record], Scanner, dict[str, bool], dict[str, bool], dict[str, int]]:
    """Scan ``count`` IDs while the batch cache still holds their statuses at the start
    and half of the offline ones have come online since: their cached answers are stale."""
    client_ids = ids(count)
    # The cache is refreshed hourly: every batch answer in the test is the start's.
    async with run_emulator(EmulatorConfig(batch_cache_seconds=3600.0)) as emu:
        cached = {c: emu.fleet.is_online(c) for c in client_ids}
        await asyncio.sleep(0.01)  # after the snapshot: the cache does not see this
        for client_id in [c for c in client_ids if not cached[c]][::2]:
            emu.fleet.set_online(client_id, True)
        truth = {c: emu.fleet.is_online(c) for c in client_ids}
        async with connect(
            instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=emu.url
        ) as client:
            settings = ScanSettings(
                instance_id=DEFAULT_INSTANCE_ID,
                mode=mode,  # type: ignore[arg-type]
                confirm_offline=confirm,
            )
            scanner = Scanner(client=client, settings=settings)
            records: list[Record] = []
            assert await scanner.run(client_ids, emit=records.append) == "completed"
        queries = dict(emu.stats().client_id_queries)
    return records, scanner, cached, truth, queries


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["batch", "hybrid"])
async def test_confirm_offline_asks_every_batch_offline_id_again_and_writes_the_real_time_status(
    mode: str,
) -> None:
    records, scanner, cached, truth, queries = await scan_with_a_stale_batch_cache(
        mode, confirm=True
    )
    stale = {c for c in truth if truth[c] != cached[c]}
    assert len(stale) > 50
    assert sorted(r.client_id for r in records) == sorted(truth)
    # Every record ends with the real-time truth, the stale ones included.
    assert {r.client_id: r.online for r in records} == truth
    by_id = {r.client_id: r for r in records}
    batch_offline = [
        c for c, r in by_id.items() if r.confirmed or (r.api == BATCH_API and not r.online)
    ]
    for client_id in batch_offline:
        record = by_id[client_id]
        assert record.confirmed
        assert record.api == SINGLE_API
        assert queries[client_id] == 2  # the batch call, then the real-time one
    for record in records:
        if record.api == BATCH_API:
            assert record.online
            assert not record.confirmed
    # Each stale one was confirmed; in hybrid, unless the single lane took it from
    # the queue and asked in real time at once.
    for client_id in stale:
        record = by_id[client_id]
        direct = mode == "hybrid" and record.api == SINGLE_API and queries[client_id] == 1
        assert record.confirmed or direct
    assert scanner.counters.calls_confirm == sum(r.confirmed for r in records)
    single = scanner.counters.lanes[SINGLE_API]
    assert single.calls_succeeded == sum(r.api == SINGLE_API for r in records)


@pytest.mark.slow
async def test_without_confirm_offline_a_stale_batch_answer_is_written_as_it_came() -> None:
    records, scanner, cached, truth, _ = await scan_with_a_stale_batch_cache("batch", confirm=False)
    assert {r.client_id: r.online for r in records} == cached != truth
    assert not any(r.confirmed for r in records)
    assert scanner.counters.calls_confirm == 0


def test_confirm_offline_is_refused_for_single_scans() -> None:
    with pytest.raises(UsageError, match="needs --mode batch or hybrid"):
        ScanSettings(instance_id=DEFAULT_INSTANCE_ID, confirm_offline=True)
    confirming = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode="batch", confirm_offline=True)
    assert confirming.lane_rates == {"batch": 96, "single": 174}


@pytest.mark.slow
async def test_hybrid_from_two_source_addresses_keeps_each_under_the_block() -> None:
    client_ids = ids(3000)
    async with run_emulator(EmulatorConfig()) as emu:
        settings = ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID,
            mode="hybrid",
            source_addresses=("127.0.0.2", "127.0.0.3"),
        )
        assert settings.lane_rates == {"batch": 96, "single": 444}
        # Each address's lanes get workers for their share of the rate, not the whole:
        # twice the workers crowded the pacers and the first second (102 batch calls).
        assert settings.lane_workers("single", routes=2) == 112
        assert settings.lane_workers("batch", routes=2) == 25
        records: list[Record] = []

        class Collect:
            def write(self, record: Record) -> None:
                records.append(record)

            def flush(self, *, fsync: bool = False) -> None:
                pass

            def close(self) -> None:
                pass

        job = ScanJob(settings, target=Target(endpoint=emu.url, credentials=DEMO))
        result = await job.run(client_ids, sinks=[Collect()])
        stats = emu.stats()
    assert result.outcome == "completed"
    assert sorted(r.client_id for r in records) == sorted(client_ids)
    assert set(stats.ip_totals) == {"127.0.0.2", "127.0.0.3"}
    counters = result.counters
    for address, total in stats.ip_totals.items():
        assert total.max_requests_1s <= ADDRESS_LIMIT
        assert counters.addresses[address].calls_sent == total.requests
    for api in (SINGLE_API, BATCH_API):
        assert counters.lanes[api].calls_sent == stats.actions[api].requests
        assert stats.actions[api].throttled == stats.actions[api].blocked == 0
    assert stats.actions[BATCH_API].max_requests_1s <= MAX_QPS["batch"]
    assert stats.actions[SINGLE_API].max_requests_1s <= MAX_QPS["single"]
