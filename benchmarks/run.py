"""fleetscan's benchmark suite: rate accuracy (undisturbed and disturbed), cost per call,
memory, time to first record, the shared (Redis) pacer against the local one, and the
audit between scans (diff, history).

    python benchmarks/run.py              # the full suite, ~45 minutes
    python benchmarks/run.py --quick      # shorter runs and smaller inputs, ~8 minutes
    python benchmarks/run.py --only rate,cost --json results.json

Every benchmark starts (and stops) its own emulator in a separate process and talks
to it on loopback only. Clients run in fresh child processes so their CPU and memory
are measured apart from the emulator's. Prints one table: figure, target, measured,
pass/fail (``-`` for figures reported for context). Exit status 0 when every target
is met, 1 otherwise. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bench_address
import bench_audit
import bench_cost
import bench_first_record
import bench_hot_path
import bench_memory
import bench_rate
import bench_redis_pacer
import bench_shared
from figures import Figure, render
from fleet_ids import write_ids

__all__ = ["BENCHMARKS", "SIZES", "Sizes", "main", "run_suite"]

BENCHMARKS = ("rate", "address", "cost", "memory", "first", "redis", "shared", "audit")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """How long and how large each benchmark runs."""

    rate_seconds: float
    rate_repeat: int
    address_seconds: float
    address_repeat: int
    cost_calls: int
    cost_repeat: int
    big_ids: int
    scan_ids: tuple[int, int]
    first_repeat: int
    redis_seconds: float
    shared_ids: int
    shared_cases: tuple[str, ...]
    diff_records: int
    history_ids: int


SIZES = {
    "full": Sizes(
        rate_seconds=60.0,
        rate_repeat=1,
        address_seconds=30.0,
        address_repeat=3,
        cost_calls=10_000,
        cost_repeat=3,
        big_ids=10_000_000,
        scan_ids=(20_000, 200_000),
        first_repeat=3,
        redis_seconds=20.0,
        shared_ids=40_000,
        shared_cases=("hosts", "nat"),
        diff_records=10_000_000,
        history_ids=10_000_000,
    ),
    "quick": Sizes(
        rate_seconds=15.0,
        rate_repeat=1,
        address_seconds=10.0,
        address_repeat=1,
        cost_calls=3_000,
        cost_repeat=1,
        big_ids=1_000_000,
        scan_ids=(5_000, 50_000),
        first_repeat=3,
        redis_seconds=5.0,
        shared_ids=15_000,
        shared_cases=("hosts", "nat"),
        diff_records=1_000_000,
        history_ids=1_000_000,
    ),
    # Each benchmark at a tiny size, so they do not rot (tests/test_benchmarks_smoke.py).
    "smoke": Sizes(
        rate_seconds=1.0,
        rate_repeat=1,
        address_seconds=1.0,
        address_repeat=1,
        cost_calls=60,
        cost_repeat=1,
        big_ids=20_000,
        scan_ids=(200, 2_000),
        first_repeat=1,
        redis_seconds=0.5,
        shared_ids=600,
        shared_cases=("hosts",),
        diff_records=2_000,
        history_ids=2_000,
    ),
}


def run_suite(
    sizes: Sizes,
    only: Sequence[str] = BENCHMARKS,
    *,
    log: Callable[[str], None] | None = None,
) -> list[Figure]:
    """Run the chosen benchmarks at ``sizes``; every figure, in order."""
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-") as tmp:
        folder = Path(tmp)
        big_input: Path | None = None
        if "memory" in only or "first" in only:
            if log:
                log(f"writing {sizes.big_ids:,} client IDs")
            big_input = write_ids(folder / "big.txt", sizes.big_ids)
        if "rate" in only:
            figures += bench_rate.run(
                seconds=sizes.rate_seconds, repeat=sizes.rate_repeat, folder=folder, log=log
            )
        if "address" in only:
            figures += bench_address.run(
                seconds=sizes.address_seconds,
                repeat=sizes.address_repeat,
                folder=folder,
                log=log,
            )
        if "cost" in only:
            figures += bench_cost.run(calls=sizes.cost_calls, repeat=sizes.cost_repeat, log=log)
            if log:
                log("cost: fleetscan's hot path without the network")
            figures += bench_hot_path.run()
        if "memory" in only:
            figures += bench_memory.run(
                estimate_ids=sizes.big_ids,
                scan_ids=sizes.scan_ids,
                folder=folder,
                big_input=big_input,
                log=log,
            )
        if "first" in only:
            figures += bench_first_record.run(
                ids=sizes.big_ids,
                repeat=sizes.first_repeat,
                folder=folder,
                big_input=big_input,
                log=log,
            )
        if "redis" in only:
            figures += bench_redis_pacer.run(seconds=sizes.redis_seconds, log=log)
        if "shared" in only:
            figures += bench_shared.run(
                cases=list(sizes.shared_cases), ids=sizes.shared_ids, log=log
            )
        if "audit" in only:
            figures += bench_audit.run(
                diff_records=sizes.diff_records,
                history_ids=sizes.history_ids,
                folder=folder,
                log=log,
            )
    return figures


def machine() -> str:
    """One line about where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs, smaller inputs")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: checks they run")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated: {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    kind = "smoke" if args.smoke else "quick" if args.quick else "full"
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    figures = run_suite(SIZES[kind], only, log=log)
    print(f"fleetscan benchmarks ({kind}) on {machine()}")
    print(render(figures), end="", flush=True)
    if args.json:
        document = {
            "suite": kind,
            "machine": machine(),
            "seconds": time.monotonic() - started,
            "figures": [f.as_dict() for f in figures],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
