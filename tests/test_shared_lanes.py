"""``--limiter`` with two lanes (hybrid, ``--confirm-offline``) and several source
addresses: every lane of every process draws on the budgets in Redis, per API for the
account and per egress address for both APIs together.

Two scans run at once in one loop, each its own connection to a real redis-server
(as two processes would) and its own shard, against one emulator at the service's
limits (500 single and 100 batch per account, 300/s per source IP over all APIs).
Each alone paces batch at 96/s; two pacing alone would send 192 batch calls a second
and be throttled. What is checked is what the emulator saw. The bounds are ceilings,
which a busy machine only makes easier to hold.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from emulator_fixtures import ids
from redis_fixtures import RedisServer

from fleetscan.credentials import Credentials
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    run_emulator,
)
from fleetscan.engine import LimiterSettings, ScanJob, ScanResult, ScanSettings, Target
from fleetscan.errors import UsageError
from fleetscan.limits import BATCH_API, MAX_QPS, SINGLE_API
from fleetscan.pacing import ADDRESS_LIMIT
from fleetscan.records import Record
from fleetscan.shard import Shard

pytestmark = pytest.mark.slow

DEMO = Credentials(
    access_key_id=DEFAULT_ACCESS_KEY_ID,
    access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
    source="the emulator's demo key",
)


class Collect:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, record: Record) -> None:
        self.records.append(record)

    def flush(self, *, fsync: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


async def scan_shards(
    server: RedisServer | None, count: int, **settings: Any
) -> tuple[list[ScanResult], list[list[Record]], Any, dict[str, bool]]:
    """Two scans, shard k of 2 each, at once; ``settings`` per shard are given as
    lists of two where they differ (``source_addresses``)."""
    fleet = ids(count)
    async with run_emulator(EmulatorConfig()) as emu:

        async def one(k: int) -> tuple[ScanResult, list[Record]]:
            own = {
                key: value[k] if isinstance(value, list) else value
                for key, value in settings.items()
            }
            scan_settings = ScanSettings(
                instance_id=DEFAULT_INSTANCE_ID,
                shard=Shard(index=k, count=2),
                limiter=LimiterSettings(url=server.url) if server is not None else None,
                **own,
            )
            sink = Collect()
            job = ScanJob(scan_settings, target=Target(endpoint=emu.url, credentials=DEMO))
            return await job.run(fleet, sinks=[sink]), sink.records

        done = await asyncio.gather(one(0), one(1))
        stats = emu.stats()
        truth = {c: emu.fleet.is_online(c) for c in fleet}
    return [r for r, _ in done], [records for _, records in done], stats, truth


def assert_every_id_once_with_its_status(
    records: list[list[Record]], truth: dict[str, bool], stats: Any
) -> None:
    union = [r.client_id for shard in records for r in shard]
    assert sorted(union) == sorted(truth)
    assert {r.client_id: r.online for shard in records for r in shard} == truth
    # Nothing asked, or billed, twice but the confirmations, once each.
    confirmed = {r.client_id for shard in records for r in shard if r.confirmed}
    assert {c for c, n in stats.client_id_queries.items() if n != 1} == confirmed
    assert set(stats.client_id_queries.values()) <= {1, 2}


def assert_within_the_account(stats: Any) -> None:
    for api in (SINGLE_API, BATCH_API):
        assert stats.actions[api].throttled == stats.actions[api].blocked == 0
    assert stats.actions[BATCH_API].max_requests_1s <= MAX_QPS["batch"]
    assert stats.actions[SINGLE_API].max_requests_1s <= MAX_QPS["single"]


async def test_two_hybrid_processes_from_two_addresses_share_the_account_s_batch_limit(
    redis_server: RedisServer,
) -> None:
    results, records, stats, truth = await scan_shards(
        redis_server, 3000, mode="hybrid", source_addresses=[("127.0.0.2",), ("127.0.0.3",)]
    )
    assert [r.outcome for r in results] == ["completed", "completed"]
    assert_every_id_once_with_its_status(records, truth, stats)
    assert_within_the_account(stats)
    # Each from its own address, each under the block there.
    assert set(stats.ip_totals) == {"127.0.0.2", "127.0.0.3"}
    for address, total in stats.ip_totals.items():
        assert total.max_requests_1s <= ADDRESS_LIMIT
        (result,) = (r for r in results if address in r.counters.addresses)
        assert result.counters.addresses[address].calls_sent == total.requests
    # Every attempt took one shared permit; leases took several a round trip.
    for result in results:
        assert result.limiter is not None
        assert result.limiter["permits"] == result.counters.calls_sent
        assert 0 < result.limiter["round_trips"] < result.limiter["permits"]
        assert "round trips to Redis" in result.summary().to_text()
    # Both lanes of both processes answered.
    for shard in records:
        assert set(Counter(r.api for r in shard)) == {SINGLE_API, BATCH_API}


@pytest.mark.parametrize(
    "lanes",
    [{"mode": "hybrid"}, {"mode": "batch", "confirm_offline": True}],
    ids=["hybrid", "confirm"],
)
async def test_two_processes_behind_one_address_share_its_budget_over_both_apis(
    redis_server: RedisServer, lanes: dict[str, Any]
) -> None:
    # Both from 127.0.0.1: pacing alone they would send 2 x 270 calls a second from it.
    results, records, stats, truth = await scan_shards(redis_server, 2400, **lanes)
    assert [r.outcome for r in results] == ["completed", "completed"]
    assert_every_id_once_with_its_status(records, truth, stats)
    assert_within_the_account(stats)
    (address,) = stats.ip_totals.values()
    assert address.max_requests_1s <= ADDRESS_LIMIT
    if lanes.get("confirm_offline"):
        confirmed = [r for shard in records for r in shard if r.confirmed]
        offline = [r for shard in records for r in shard if r.online is False]
        assert confirmed
        assert {r.client_id for r in confirmed} == {r.client_id for r in offline}
        assert all(r.api == SINGLE_API for r in confirmed)


def test_a_shared_rate_below_two_a_second_is_refused_before_any_call() -> None:
    limiter = LimiterSettings(url="redis://127.0.0.1:6379/0")
    with pytest.raises(UsageError, match=r"--qps 1 with --limiter: .* 2 calls/s or more"):
        ScanSettings(instance_id=DEFAULT_INSTANCE_ID, qps=1, limiter=limiter)
    ScanSettings(instance_id=DEFAULT_INSTANCE_ID, qps=2, limiter=limiter)
    ScanSettings(instance_id=DEFAULT_INSTANCE_ID, qps=1)  # alone, a local pacer paces at 1


def test_an_address_group_with_several_source_addresses_is_refused() -> None:
    limiter = LimiterSettings(url="redis://127.0.0.1:6379/0", address_group="nat-1")
    with pytest.raises(UsageError, match="--address-group 'nat-1' names the one egress"):
        ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID,
            limiter=limiter,
            source_addresses=("127.0.0.2", "127.0.0.3"),
        )
    # One source address behind a group, or several without one, are fine.
    ScanSettings(instance_id=DEFAULT_INSTANCE_ID, limiter=limiter, source_addresses=("127.0.0.2",))
    ScanSettings(
        instance_id=DEFAULT_INSTANCE_ID,
        mode="hybrid",
        limiter=LimiterSettings(url="redis://127.0.0.1:6379/0"),
        source_addresses=("127.0.0.2", "127.0.0.3"),
    )


async def test_the_address_budget_given_is_the_shared_address_budget(
    redis_server: RedisServer,
) -> None:
    # --qps 100 from one address with --address-budget 40: the address's key in Redis
    # holds it to 40, not the default 270.
    results, records, stats, truth = await scan_shards(
        redis_server, 240, mode="single", qps=100, address_budget=40
    )
    assert [r.outcome for r in results] == ["completed", "completed"]
    assert_every_id_once_with_its_status(records, truth, stats)
    (address,) = stats.ip_totals.values()
    assert address.max_requests_1s <= 40


def test_two_lanes_split_each_address_s_shared_budget_between_the_apis() -> None:
    from fleetscan.engine.pacers import shared_rates

    limiter = LimiterSettings(url="redis://127.0.0.1:6379/0")
    # The account's rates are every process's together; each address's split is its
    # own, whatever the number of addresses (96 + 174 of 270, for every process).
    for addresses in ((), ("127.0.0.2", "127.0.0.3", "127.0.0.4")):
        hybrid = ScanSettings(
            instance_id=DEFAULT_INSTANCE_ID,
            mode="hybrid",
            limiter=limiter,
            source_addresses=addresses,
        )
        assert shared_rates(hybrid) == {"batch": (96, 96), "single": (482, 174)}
    confirming = ScanSettings(
        instance_id=DEFAULT_INSTANCE_ID,
        mode="batch",
        qps=50,
        confirm_offline=True,
        limiter=limiter,
        address_budget=200,
    )
    assert shared_rates(confirming) == {"batch": (50, 50), "single": (482, 150)}
    # One lane: the API's pace, the address's budget whole (270 binds there).
    single = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, limiter=limiter)
    assert shared_rates(single) == {"single": (482, None)}
