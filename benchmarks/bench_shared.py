"""Several ``fleetscan scan --shard k/N --limiter ...`` processes against one emulator.

    python benchmarks/bench_shared.py [--processes 3] [--ids 6000] [--mode single]
                                      [--source-addresses 127.0.0.2,127.0.0.3,127.0.0.4]

Starts a ``redis-server`` (from PATH) on a free loopback port and the emulator in its
own process with the account limits and the per-IP limit on (300/s over all APIs),
then N scan processes, shard k of N each, all with one ``--limiter``, at the shared
account pace (``--qps`` 482 single / 96 batch). Figures: the IDs per second of all
processes together against what the budgets allow, the busiest sliding second per API
(<= the account limit) and per source address (<= 300), throttled answers (0), and
every ID once across the shards' outputs.

With ``--source-addresses`` each process sends from one address (``--source-address``;
only where the command has that option). Without, they all send from 127.0.0.1 and
share its address budget (270/s): the "many processes behind one NAT address" case.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from bench_redis_pacer import _Redis
from emulator_process import INSTANCE_ID, ROOT, EmulatorProcess, child_env
from figures import Figure, render

__all__ = ["run"]

ACCOUNT = {
    "single": (500, "QuerySessionByClientId"),
    "batch": (100, "BatchQuerySessionByClientIds"),
}
PACE = {"single": 482, "batch": 96}
ADDRESS_BUDGET = 270
ADDRESS_LIMIT = 300


def run(
    *, processes: int, ids: int, mode: str, source_addresses: list[str] | None = None
) -> list[Figure]:
    binary = shutil.which("redis-server")
    if binary is None:
        return [Figure(name="shared: skipped", target="-", measured="needs redis-server")]
    limit, api = ACCOUNT[mode]
    with tempfile.TemporaryDirectory(prefix="fleetscan-shared-") as tmp:
        folder = Path(tmp)
        (folder / "ids.txt").write_text("".join(f"GID_bench@@@d{i}\n" for i in range(ids)))
        redis = _Redis(binary, folder)
        try:
            with EmulatorProcess("--ip-limit", str(ADDRESS_LIMIT), gc_off=True) as emu:
                started = time.monotonic()
                procs = []
                for k in range(processes):
                    extra = (
                        ["--source-address", source_addresses[k % len(source_addresses)]]
                        if source_addresses
                        else []
                    )
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "fleetscan",
                                "scan",
                                *("--endpoint", emu.url, "--instance-id", INSTANCE_ID),
                                *("--mode", mode, "--qps", str(PACE[mode])),
                                *("--shard", f"{k}/{processes}"),
                                *("--limiter", f"redis://127.0.0.1:{redis.port}/0"),
                                *extra,
                                *("-o", str(folder / f"out{k}.ndjson"), "--quiet"),
                                str(folder / "ids.txt"),
                            ],
                            cwd=ROOT,
                            env=child_env(credentials=True),
                            stderr=subprocess.PIPE,
                        )
                    )
                codes = [p.wait(timeout=600) for p in procs]
                elapsed = time.monotonic() - started
                errors = [p.stderr.read().decode()[-500:] for p in procs if p.stderr]
                stats: dict[str, Any] = emu.stats()
        finally:
            redis.stop()
        written = [
            line
            for k in range(processes)
            for line in (folder / f"out{k}.ndjson").read_bytes().splitlines()
        ]
    if any(codes):
        return [Figure(name="shared: failed", target="exit 0", measured=f"{codes} {errors}")]
    action = stats["actions"][api]
    addresses = stats["ip_totals"]
    per_address = max((s["max_requests_1s"] for s in addresses.values()), default=0)
    n_addresses = len(source_addresses) if source_addresses else 1
    per_call = 10 if mode == "batch" else 1
    allowed = min(PACE[mode], ADDRESS_BUDGET * n_addresses) * per_call
    # From the first answer to the last, over every process: the start-up of N
    # interpreters (and the limiter's quarter second of caution) left out.
    stamps = sorted(datetime.fromisoformat(orjson.loads(line)["checked_at"]) for line in written)
    steady = (len(stamps) - 1) / max((stamps[-1] - stamps[0]).total_seconds(), 1e-9)
    rate = ids / elapsed
    unique = {orjson.loads(line)["client_id"] for line in written}
    label = f"{processes} processes, {n_addresses} address(es), {mode}"
    return [
        Figure(
            name=f"{label}: IDs/s together",
            target=f">= 0.95 x {allowed} (what the budgets allow), first to last answer",
            measured=f"{steady:.0f} ({steady / allowed:.2f}); with start-up {rate:.0f} "
            f"in {elapsed:.1f} s",
            passed=steady >= 0.95 * allowed,
        ),
        Figure(
            name=f"{label}: busiest second, {api}",
            target=f"<= {limit}",
            measured=str(action["max_requests_1s"]),
            passed=action["max_requests_1s"] <= limit,
        ),
        Figure(
            name=f"{label}: busiest second per address",
            target=f"<= {ADDRESS_LIMIT}",
            measured=f"{per_address} ({', '.join(sorted(addresses))})",
            passed=per_address <= ADDRESS_LIMIT,
        ),
        Figure(
            name=f"{label}: throttled, blocked",
            target="0, 0",
            measured=f"{action['throttled']}, {action['blocked']}",
            passed=action["throttled"] == 0 and action["blocked"] == 0,
        ),
        Figure(
            name=f"{label}: records over the shards",
            target=f"{ids}, each ID once",
            measured=f"{len(written)} records, {len(unique)} IDs",
            passed=len(written) == ids == len(unique),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--ids", type=int, default=6000)
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--source-addresses", help="comma-separated, one per process in turn")
    args = parser.parse_args()
    addresses = args.source_addresses.split(",") if args.source_addresses else None
    print(
        render(
            run(processes=args.processes, ids=args.ids, mode=args.mode, source_addresses=addresses)
        )
    )


if __name__ == "__main__":
    main()
