"""The address budget on today's scan path, against the emulator at the service's limits.

A single scan and a batch scan run at once from one address, each paced by its API's
account pacer composed with one shared `AddressBudget`, through a loopback proxy that
delays each request a random 0-40 ms (benchmarks/disturbance.py). The emulator counts
the per-IP limit over all APIs together and blocks past 300/s. The bounds asserted are
ceilings, which a busy machine can only make easier to hold, never the rate reached.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

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
from fleetscan.limiter import RateLimiter
from fleetscan.limits import BATCH_API, SINGLE_API, Mode
from fleetscan.pacing import ACCOUNT_PACE, AccountPacer, AddressBudget, CompositePacer, Pacer
from fleetscan.scanner import Scanner, ScanSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from disturbance import serve_proxy

pytestmark = pytest.mark.slow

DEMO = Credentials(
    access_key_id=DEFAULT_ACCESS_KEY_ID,
    access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
    source="the emulator's demo key",
)


async def scan_both_apis(single: Pacer, batch: Pacer) -> dict[str, Any]:
    """Scan 700 IDs single and 2,500 batch at once through the jitter proxy."""
    loop = asyncio.get_running_loop()
    async with run_emulator(EmulatorConfig()) as emu:  # 500/100, 300/s per IP, all APIs
        ready: asyncio.Future[int] = loop.create_future()
        host, port = "127.0.0.1", emu.port
        proxy = asyncio.create_task(serve_proxy(host, port, max_delay=0.04, ready=ready))
        endpoint = f"http://127.0.0.1:{await ready}/"
        try:

            async def scan(mode: Mode, pacer: Pacer, client_ids: list[str]) -> str:
                async with connect(
                    instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=endpoint
                ) as client:
                    settings = ScanSettings(
                        instance_id=DEFAULT_INSTANCE_ID, mode=mode, qps=ACCOUNT_PACE[mode]
                    )
                    scanner = Scanner(client=client, settings=settings, limiter=pacer)
                    return await scanner.run(client_ids, emit=lambda record: None)

            outcomes = await asyncio.gather(
                scan("single", single, ids(700, "GID_s@@@d")),
                scan("batch", batch, ids(2500, "GID_b@@@d")),
            )
        finally:
            proxy.cancel()
            await asyncio.gather(proxy, return_exceptions=True)
        stats = emu.stats()
    return {"outcomes": outcomes, "stats": stats}


async def test_two_apis_through_one_address_budget_stay_under_the_block_and_unthrottled() -> None:
    address = AddressBudget()  # 270/s
    single = CompositePacer(address, AccountPacer("single", 270 - ACCOUNT_PACE["batch"]))
    batch = CompositePacer(address, AccountPacer("batch"))
    result = await scan_both_apis(single, batch)
    stats = result["stats"]
    assert result["outcomes"] == ["completed", "completed"]
    (address_stats,) = stats.ip_totals.values()
    assert address_stats.max_requests_1s <= 300
    for api in (SINGLE_API, BATCH_API):
        counters = stats.actions[api]
        assert counters.throttled == counters.blocked == 0
    # Every ID asked exactly once: nothing was refused and retried.
    queries = stats.client_id_queries
    assert len(queries) == 3200
    assert set(queries.values()) == {1}


async def test_today_s_limiters_side_by_side_get_the_address_blocked() -> None:
    # The counterfactual: each API at its own rate, nothing counting them together.
    result = await scan_both_apis(RateLimiter(300), RateLimiter(100))
    stats = result["stats"]
    assert sum(a.blocked for a in stats.actions.values()) > 0
