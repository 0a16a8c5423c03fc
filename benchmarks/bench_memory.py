"""Peak memory and time of deduplicating N client IDs.

    python benchmarks/bench_memory.py 1000000 10000000

Each measurement runs in a fresh child process (peak RSS is per process), which
first imports aiohttp and fleetscan so the baseline is what a real run carries:

- ``seenset N``: N ``SeenSet.add`` calls.
- ``set N``: the same IDs in a Python ``set`` of strings (only up to ``--set-max``).
- ``pipeline N``: what ``fleetscan estimate`` does: read N IDs from a text file
  (``inputs.read_client_ids``), validate each (``ids.client_id_problem``), dedup
  (``SeenSet``), forecast both modes.

Peak RSS is ``ru_maxrss`` of the child; bytes/ID is (peak - baseline) / N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _client_id(i: int) -> str:
    # ~31 characters, like real IDs: GID_ prefix, @@@, a device number.
    return f"GID_fleet_bench@@@dev-{i:09d}"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(kind: str, n: int, path: str | None) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import aiohttp  # noqa: F401  (the baseline a real run carries)

    from fleetscan.dedup import SeenSet
    from fleetscan.estimate import forecast
    from fleetscan.ids import client_id_problem
    from fleetscan.inputs import read_client_ids

    baseline = _peak_mib()
    start = time.perf_counter()
    if kind == "seenset":
        seen = SeenSet()
        for i in range(n):
            seen.add(_client_id(i))
        size = len(seen)
    elif kind == "set":
        plain: set[str] = set()
        for i in range(n):
            plain.add(_client_id(i))
        size = len(plain)
    elif kind == "pipeline":
        assert path is not None
        seen = SeenSet()
        for row in read_client_ids([path]):
            if client_id_problem(row.client_id) is None:
                seen.add(row.client_id)
        size = len(seen)
        forecast(size, mode="single", qps=300)
        forecast(size, mode="batch", qps=100)
    else:
        raise SystemExit(f"unknown kind {kind}")
    seconds = time.perf_counter() - start
    assert size == n, (size, n)
    return {"baseline_mib": baseline, "peak_mib": _peak_mib(), "seconds": seconds}


def _run(kind: str, n: int, path: str | None = None) -> dict[str, float]:
    args = [sys.executable, __file__, "--child", kind, str(n)]
    if path:
        args += ["--path", path]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


def _report(kind: str, n: int, r: dict[str, float]) -> None:
    per_id = (r["peak_mib"] - r["baseline_mib"]) * 1024 * 1024 / n
    print(
        f"{kind:9} n={n:>11,}  baseline {r['baseline_mib']:6.1f} MiB  "
        f"peak {r['peak_mib']:7.1f} MiB  {per_id:6.1f} B/ID  "
        f"{r['seconds']:7.2f} s  {r['seconds'] / n * 1e6:5.2f} us/ID",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--set-max", type=int, default=1_000_000)
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.sizes[0], args.path)))
        return
    for n in args.sizes:
        seenset = _run("seenset", n)
        _report("SeenSet", n, seenset)
        if n <= args.set_max:
            plain = _run("set", n)
            _report("set", n, plain)
            grown = seenset["peak_mib"] - seenset["baseline_mib"]
            grown_set = plain["peak_mib"] - plain["baseline_mib"]
            print(
                f"          SeenSet / set: memory {grown / grown_set:.2f}x, "
                f"time {seenset['seconds'] / plain['seconds']:.2f}x",
                flush=True,
            )
        if not args.no_pipeline:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "ids.txt")
                with open(path, "w") as f:
                    for i in range(n):
                        f.write(_client_id(i) + "\n")
                _report("pipeline", n, _run("pipeline", n, path))


if __name__ == "__main__":
    main()
