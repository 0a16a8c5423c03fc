"""The address budget on today's scan path, against the emulator at the service's limits.

A single scan and a batch scan run at once from one address, each paced by its API's
account pacer composed with one shared `AddressBudget`, through a loopback proxy that
delays each request a random 0-40 ms (benchmarks/disturbance.py). The emulator counts
the per-IP limit over all APIs together and blocks past 300/s. The bounds asserted are
ceilings, which a busy machine can only make easier to hold, never the rate reached.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from emulator_fixtures import ids

from fleetscan.cli import main
from fleetscan.client import connect
from fleetscan.credentials import Credentials
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    run_emulator,
)
from fleetscan.engine import Scanner, ScanSettings
from fleetscan.limiter import RateLimiter
from fleetscan.limits import BATCH_API, SINGLE_API, Mode
from fleetscan.pacer import Pacer
from fleetscan.pacing import (
    AccountPacer,
    AddressBudget,
    CompositePacer,
    lane_rates,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from disturbance import CpuHog, JitterProxy, serve_proxy
from emulator_process import EmulatorProcess

pytestmark = pytest.mark.slow

DEMO = Credentials(
    access_key_id=DEFAULT_ACCESS_KEY_ID,
    access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
    source="the emulator's demo key",
)


async def scan_both_apis(
    single: Pacer,
    batch: Pacer,
    *,
    singles: int = 500,
    batched: int = 1500,
    config: EmulatorConfig | None = None,
) -> dict[str, Any]:
    """Scan ``singles`` IDs single and ``batched`` batch at once through the jitter proxy."""
    loop = asyncio.get_running_loop()
    # By default the service's limits: 500/100, 300/s per IP over all APIs.
    async with run_emulator(config or EmulatorConfig()) as emu:
        ready: asyncio.Future[int] = loop.create_future()
        host, port = "127.0.0.1", emu.port
        proxy = asyncio.create_task(serve_proxy(host, port, max_delay=0.04, ready=ready))
        endpoint = f"http://127.0.0.1:{await ready}/"
        try:

            async def scan(mode: Mode, pacer: Pacer, client_ids: list[str]) -> tuple[str, int]:
                async with connect(
                    instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=endpoint
                ) as client:
                    settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, mode=mode, qps=100)
                    scanner = Scanner(client=client, settings=settings, pacer=pacer)
                    outcome = await scanner.run(client_ids, emit=lambda record: None)
                    counters = scanner.counters
                    return outcome, counters.online + counters.offline

            outcomes = await asyncio.gather(
                scan("single", single, ids(singles, "GID_single@@@d")),
                scan("batch", batch, ids(batched, "GID_batch@@@d")),
            )
        finally:
            proxy.cancel()
            await asyncio.gather(proxy, return_exceptions=True)
        stats = emu.stats()
    return {"outcomes": outcomes, "stats": stats}


async def test_two_apis_through_one_address_budget_stay_under_the_block_and_unthrottled() -> None:
    address = AddressBudget()  # 270/s
    single = CompositePacer(address, AccountPacer("single", lane_rates()["single"]))
    batch = CompositePacer(address, AccountPacer("batch"))
    result = await scan_both_apis(single, batch)
    stats = result["stats"]
    assert result["outcomes"] == [("completed", 500), ("completed", 1500)]
    (address_stats,) = stats.ip_totals.values()
    assert address_stats.max_requests_1s <= 300
    for api in (SINGLE_API, BATCH_API):
        counters = stats.actions[api]
        assert counters.throttled == counters.blocked == 0
    # Every ID asked exactly once: nothing was refused and retried.
    queries = stats.client_id_queries
    assert len(queries) == 2000
    assert set(queries.values()) == {1}


# A small scale of the same that any machine can reach: single paced at 60/s and batch
# at 20/s from one address blocked past 66/s. Through one address budget of 60 they
# stay under the block; as today's limiters side by side, nothing counting them
# together, they get the address blocked.
SMALL = EmulatorConfig(limits=Limits(ip_limit=66))


async def test_at_a_small_scale_the_address_budget_is_what_stays_unblocked() -> None:
    address = AddressBudget(60, limit=66)
    single = CompositePacer(address, AccountPacer("single", 60))
    batch = CompositePacer(address, AccountPacer("batch", 20))
    result = await scan_both_apis(single, batch, singles=120, batched=600, config=SMALL)
    stats = result["stats"]
    assert result["outcomes"] == [("completed", 120), ("completed", 600)]
    assert sum(a.blocked for a in stats.actions.values()) == 0
    (address_stats,) = stats.ip_totals.values()
    assert address_stats.max_requests_1s <= 66


async def test_at_a_small_scale_today_s_limiters_side_by_side_get_the_address_blocked() -> None:
    result = await scan_both_apis(
        RateLimiter(60), RateLimiter(20), singles=200, batched=1000, config=SMALL
    )
    stats = result["stats"]
    assert sum(a.blocked for a in stats.actions.values()) > 0


async def test_a_scan_s_default_pacing_is_its_address_budget_over_the_api_s_account_pace() -> None:
    # No pacer given: the settings' address budget (60 here, block at 66) composed with
    # the single API's account pace (482), through the jitter proxy.
    async with run_emulator(SMALL) as emu:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        proxy = asyncio.create_task(serve_proxy("127.0.0.1", emu.port, max_delay=0.04, ready=ready))
        endpoint = f"http://127.0.0.1:{await ready}/"
        try:
            async with connect(
                instance_id=DEFAULT_INSTANCE_ID, credentials=DEMO, endpoint=endpoint
            ) as client:
                settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, address_budget=60)
                scanner = Scanner(client=client, settings=settings)
                outcome = await scanner.run(ids(150), emit=lambda record: None)
        finally:
            proxy.cancel()
            await asyncio.gather(proxy, return_exceptions=True)
        stats = emu.stats()
    assert outcome == "completed"
    assert scanner.counters.online + scanner.counters.offline == 150
    pacer = scanner.pacer
    assert isinstance(pacer, CompositePacer)
    address, account = pacer.pacers
    assert isinstance(address, AddressBudget)
    assert address.budget == 60
    assert isinstance(account, AccountPacer)
    assert account.current_rate == 482
    (address_stats,) = stats.ip_totals.values()
    assert address_stats.max_requests_1s <= 66
    assert sum(a.blocked + a.throttled for a in stats.actions.values()) == 0


# --- the command at its defaults, disturbed -----------------------------------------------


@pytest.mark.parametrize(("mode", "count"), [("single", 1000), ("batch", 3000)])
def test_the_command_at_its_defaults_under_a_cpu_hog_and_the_jitter_proxy_stays_unblocked(
    mode: str, count: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `fleetscan scan` as a user runs it, nothing but the mode given: single at the
    # address budget (270/s), batch at its pace (96/s), a few seconds each. The
    # emulator at the service's limits (300/s per IP over all APIs, 500/100 per API)
    # runs in its own process with the collector off, so its pauses do not bunch
    # what it counts; the jitter proxy (serve_proxy, in a child) delays each request
    # 0-40 ms; one busy loop per CPU competes with all three for the CPU.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    client_ids = ids(count, f"GID_{mode}@@@d")
    inputs = tmp_path / "ids.txt"
    inputs.write_text("".join(f"{cid}\n" for cid in client_ids))
    output = tmp_path / "status.ndjson"
    with (
        EmulatorProcess(gc_off=True) as emu,
        JitterProxy(emu.url, max_delay_ms=40) as proxy,
        CpuHog(os.cpu_count() or 1),  # killed on the way out, whatever happens
    ):
        code = main(
            [
                "scan",
                "--endpoint",
                proxy.url,
                "--instance-id",
                DEFAULT_INSTANCE_ID,
                "--mode",
                mode,
                str(inputs),
                "-o",
                str(output),
                "--quiet",
            ]
        )
        stats = emu.stats(client_ids=True)
    assert code == 0
    records = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert sorted(r["client_id"] for r in records) == sorted(client_ids)
    assert {r["status"] for r in records} <= {"online", "offline"}
    # Ceilings only: no second over the block from the one address, nothing refused.
    (address,) = stats["ip_totals"].values()
    assert address["max_requests_1s"] <= 300
    for action in stats["actions"].values():
        assert action["throttled"] == action["blocked"] == 0
    # Every ID reached the service once: no call was refused and asked again.
    queries = stats["client_id_queries"]
    assert len(queries) == count
    assert set(queries.values()) == {1}
