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

For the suite (``benchmarks/run.py``), `run` measures the real commands, each in a
fresh process whose peak RSS the parent reads with ``os.wait4``:

- ``fleetscan estimate`` over a file of N IDs (10 million; dedup and validation included);
- ``fleetscan scan`` of 20,000 and 200,000 IDs against an emulator in another process,
  writing records to a file. The CLI refuses more than 500 calls/s and paces within
  the address budget (270/s), which would make 200,000 IDs a twelve-minute scan; the
  child runs ``cli.main`` with those ceilings lifted (the settings' account limit, and
  the default pacer a `RateLimiter` at ``--qps 1000000``; ``--concurrency 251``, the
  default at 500/s), nothing else.
  The growth between the two scans is set against the growth of a bare `SeenSet`
  between the same sizes (the ``seenset`` child above).
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
from collections.abc import Callable, Sequence
from pathlib import Path

from emulator_process import INSTANCE_ID, EmulatorProcess, child_env
from figures import Figure
from fleet_ids import write_ids

ROOT = Path(__file__).resolve().parent.parent
# The default --concurrency at --qps 500: the most workers (and connections) the CLI runs.
SCAN_CONCURRENCY = 251
ESTIMATE_TARGET_MIB = 256
# Allowed growth between the two scans beyond the dedup set's own. Python-level peaks
# (tracemalloc) grow by the dedup set alone; RSS grows ~2 MiB more from 20k to 200k IDs,
# once: the allocator's pools settle in a scan's first minute (from 200k to 600k IDs the
# scan grew 8.8 MiB, the dedup set alone 8.6; benchmarks/README.md).
RSS_NOISE_MIB = 3.0


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


# --- the suite's figures: the real commands ---------------------------------------------


def peak_rss(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 3600
) -> tuple[int, float, float]:
    """Run ``args``; its exit code, peak RSS (MiB) and wall seconds, from ``os.wait4``."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if process.returncode not in (0, 1):
            err.seek(0)
            raise RuntimeError(f"{args[2:5]} exited {process.returncode}: {err.read()[-2000:]!r}")
    return process.returncode, usage.ru_maxrss / 1024, seconds


def estimate_peak(path: Path) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of ``fleetscan estimate PATH``."""
    args = [sys.executable, "-m", "fleetscan", "estimate", str(path)]
    _, peak, seconds = peak_rss(args, env=child_env())
    return peak, seconds


def scan_peak(path: Path, url: str, folder: Path) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of ``fleetscan scan PATH`` against the emulator at ``url``."""
    out = folder / "scan.ndjson"
    argv = ["scan", "--endpoint", url, "--instance-id", INSTANCE_ID, "--quiet"]
    argv += ["--qps", "1000000", "--concurrency", str(SCAN_CONCURRENCY), "-o", str(out), str(path)]
    _, peak, seconds = peak_rss(
        [sys.executable, __file__, "--scan-child", *argv], env=child_env(credentials=True)
    )
    records, ids = _lines(out), _lines(path)
    out.unlink()
    if records != ids:
        raise RuntimeError(f"the scan of {ids} IDs wrote {records} records, not one per ID")
    return peak, seconds


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def _scan_child(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from fleetscan import cli
    from fleetscan.engine import scanner, settings
    from fleetscan.limiter import RateLimiter

    # The one change to the command: its ceilings (the account's 500 calls/s, the
    # address budget's 270) are lifted.
    settings.MAX_QPS = {"single": 10**9, "batch": 10**9}
    scanner.default_pacer = lambda s: RateLimiter(s.api_rate)  # type: ignore[assignment]
    raise SystemExit(cli.main(argv))


def run(
    *,
    estimate_ids: int = 10_000_000,
    scan_ids: tuple[int, int] = (20_000, 200_000),
    folder: Path | None = None,
    big_input: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Figure]:
    """The suite's memory figures."""
    say = log or (lambda message: None)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-mem-", dir=folder) as tmp:
        scratch = Path(tmp)
        if big_input is None:
            say(f"memory: writing {estimate_ids:,} IDs")
            big_input = write_ids(scratch / "estimate.txt", estimate_ids)
        say(f"memory: fleetscan estimate over {estimate_ids:,} IDs")
        peak, seconds = estimate_peak(big_input)
        base, _ = estimate_peak(write_ids(scratch / "one.txt", 1))
        figures.append(
            Figure(
                name=f"memory: peak RSS of estimate, {estimate_ids:,} IDs",
                target=f"<= {ESTIMATE_TARGET_MIB} MB",
                measured=f"{peak:.0f} MiB ({base:.0f} MiB for 1 ID; "
                f"{(peak - base) * 2**20 / estimate_ids:.1f} B/ID; {seconds:.0f} s)",
                passed=peak * 2**20 <= ESTIMATE_TARGET_MIB * 10**6,
                data={"peak_mib": peak, "one_id_mib": base, "seconds": seconds},
            )
        )
        small, large = scan_ids
        peaks = {}
        with EmulatorProcess("--qps-single", "100000", "--ip-limit", "0") as emu:
            for n in scan_ids:
                say(f"memory: fleetscan scan of {n:,} IDs")
                path = write_ids(scratch / f"scan-{n}.txt", n)
                peaks[n] = scan_peak(path, emu.url, scratch)
                path.unlink()
        dedup = {n: _run("seenset", n) for n in scan_ids}
        dedup_growth = dedup[large]["peak_mib"] - dedup[small]["peak_mib"]
        growth = peaks[large][0] - peaks[small][0]
        figures.append(
            Figure(
                name=f"memory: peak RSS of scan, {small:,} -> {large:,} IDs",
                target=f"growth <= dedup set's + {RSS_NOISE_MIB:g} MiB",
                measured=f"{peaks[small][0]:.0f} -> {peaks[large][0]:.0f} MiB: +{growth:.1f} MiB; "
                f"dedup set alone +{dedup_growth:.1f} MiB ({peaks[large][1]:.0f} s)",
                passed=growth <= dedup_growth + RSS_NOISE_MIB,
                data={
                    "scan_peak_mib": {str(n): p[0] for n, p in peaks.items()},
                    "scan_seconds": {str(n): p[1] for n, p in peaks.items()},
                    "dedup_peak_mib": {str(n): d["peak_mib"] for n, d in dedup.items()},
                },
            )
        )
    return figures


def main() -> None:
    if sys.argv[1:2] == ["--scan-child"]:
        _scan_child(sys.argv[2:])
        return
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
