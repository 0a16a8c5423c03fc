"""Two scans, each of its own shard, sharing one budget through Redis, against one
emulator whose account limit is that budget: the server never sees more than the
limit in a sliding second, and the shards' outputs together hold every ID once.

The scans run as two connections to Redis (as two processes would), through the
real client over loopback: the library under ``--limiter`` and ``--shard``, whose
command-line tests are in test_shared_scan_cli.py.
"""

from __future__ import annotations

import asyncio

from emulator_fixtures import ids
from redis_fixtures import RedisServer

from fleetscan.client import connect
from fleetscan.credentials import Credentials
from fleetscan.emulator import (
    ACTION_SINGLE,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    RunningEmulator,
    run_emulator,
)
from fleetscan.engine import Scanner, ScanSettings
from fleetscan.limits import SINGLE_API
from fleetscan.records import Record
from fleetscan.redis_pacer import SharedBudget
from fleetscan.shard import Shard

DEMO = Credentials(
    access_key_id=DEFAULT_ACCESS_KEY_ID,
    access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
    source="the emulator's demo key",
)


async def scan_shard(
    emu: RunningEmulator, server: RedisServer, shard: Shard, fleet: list[str], qps: int
) -> tuple[str, list[Record]]:
    budget = await SharedBudget.connect(
        server.url, access_key_id=DEMO.access_key_id, address="loopback"
    )
    records: list[Record] = []
    try:
        async with connect(
            instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=emu.url
        ) as client:
            # Each scan alone would be allowed the whole qps: only the shared budget
            # keeps the two together under the account's limit.
            settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode="single", qps=qps)
            pacer = budget.pacer(SINGLE_API, qps, address_qps=qps)
            scanner = Scanner(client=client, settings=settings, pacer=pacer)
            outcome = await scanner.run(
                (cid for cid in fleet if shard.owns(cid)), emit=records.append
            )
    finally:
        await budget.aclose()
    return outcome, records


async def test_two_sharded_scans_share_the_account_limit_and_cover_the_fleet_once(
    redis_server: RedisServer,
) -> None:
    qps = 60
    fleet = ids(150) + ids(20)  # duplicates too: each lands in one shard
    config = EmulatorConfig(limits=Limits(qps_single=qps, qps_batch=qps))
    async with run_emulator(config) as emu:
        done = await asyncio.gather(
            *(scan_shard(emu, redis_server, Shard(index=k, count=2), fleet, qps) for k in (0, 1))
        )
        stats = emu.stats().actions[ACTION_SINGLE]
    assert [outcome for outcome, _ in done] == ["completed", "completed"]
    records = [r for _, shard_records in done for r in shard_records]
    by_id = {r.client_id: r for r in records}
    assert len(by_id) == len(records) == 150  # every unique ID once, over both shards
    assert all(r.online is emu.fleet.is_online(r.client_id) for r in records)
    assert all(len(shard_records) > 40 for _, shard_records in done)
    # What the server saw, on its clock of arrivals (the local pacer's test allows the
    # same one call of arrival jitter on a loaded machine).
    assert stats.max_requests_1s <= qps + 1
    assert stats.throttled <= 1
    assert stats.requests == 150 + stats.throttled
