"""Today's scan path (`Scanner` over `connect`) with a chosen pacer, in a child process.

    python benchmarks/paced_scan.py --endpoint URL --mode single --pacer address \\
        --ids FILE --result FILE [--address-budget 270] [--qps N]

``--pacer address``: the address budget composed with the API's account pacer
(`fleetscan.pacing`), the pacing issue 10 asks for. ``--pacer limiter``: the
`RateLimiter` at ``--qps`` that ``fleetscan scan`` uses today. The scan is what
``fleetscan scan`` runs, minus output files: the result is one JSON document of the
scan's counters and the span of its answers. Credentials come from the environment
(the emulator's throwaway key, see emulator_process.child_env).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fleetscan.client import connect
from fleetscan.engine import Scanner, ScanSettings
from fleetscan.limiter import RateLimiter
from fleetscan.pacing import (
    ADDRESS_LIMIT,
    DEFAULT_ADDRESS_BUDGET,
    AccountPacer,
    AddressBudget,
    CompositePacer,
)
from fleetscan.records import Record


def pacer_for(
    kind: str, mode: str, budget: float, qps: float | None, limit: int = ADDRESS_LIMIT
) -> tuple[Any, float]:
    """The pacer and the rate it aims at."""
    if kind == "limiter":
        rate = qps or 300.0
        return RateLimiter(rate), rate
    api = AccountPacer(mode) if qps is None else AccountPacer(mode, qps)  # type: ignore[arg-type]
    address = AddressBudget(budget, limit=limit)
    rate = min(budget, api.current_rate)
    return CompositePacer(address, api), rate


async def scan(args: argparse.Namespace, client_ids: list[str]) -> dict[str, Any]:
    pacer, rate = pacer_for(
        args.pacer, args.mode, args.address_budget, args.qps, args.address_limit
    )
    settings = ScanSettings(instance_id=args.instance_id, mode=args.mode, qps=rate)
    answered: list[float] = []

    def emit(record: Record) -> None:
        answered.append(time.monotonic())

    started = time.monotonic()
    async with connect(instance_id=args.instance_id, endpoint=args.endpoint) as client:
        scanner = Scanner(client=client, settings=settings, pacer=pacer)
        outcome = await scanner.run(client_ids, emit=emit)
    counters = scanner.counters
    first, last = (answered[0], answered[-1]) if answered else (None, None)
    # Answers per second between the 10th and the 90th percentile: the steady state,
    # without the start-up and the tail.
    low, high = len(answered) // 10, len(answered) * 9 // 10
    steady = (high - low) / (answered[high] - answered[low]) if high > low else 0.0
    return {
        "outcome": outcome,
        "rate": rate,
        "duration_seconds": time.monotonic() - started,
        "span_seconds": (last - first) if first is not None and last is not None else 0.0,
        "steady_answers_per_second": steady,
        "records": counters.done,
        "errors": counters.errors,
        "calls_sent": counters.calls_sent,
        "calls_throttled": counters.calls_throttled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--instance-id", default="mqtt-cn-emulator")
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--pacer", choices=("address", "limiter"), default="address")
    parser.add_argument("--address-budget", type=float, default=DEFAULT_ADDRESS_BUDGET)
    parser.add_argument(
        "--address-limit", type=int, default=ADDRESS_LIMIT, help="the block, for scaled runs"
    )
    parser.add_argument("--qps", type=float, help="the API's rate (default: its pace)")
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    client_ids = args.ids.read_text(encoding="ascii").split()
    args.result.write_text(json.dumps(asyncio.run(scan(args, client_ids))) + "\n")


if __name__ == "__main__":
    main()
