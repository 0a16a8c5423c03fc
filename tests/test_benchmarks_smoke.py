"""The benchmark suite runs, at tiny sizes, so it does not rot.

Each benchmark runs as the README documents it (``python benchmarks/run.py --smoke
--only NAME``), in a child process. Timings and pass/fail verdicts are not asserted:
at these sizes they mean nothing. What is asserted is that every figure is produced
from real work (calls answered, records written, peaks read), that the suite talks
to its own emulators, and that it leaves no process and no file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_fixtures import redis_binary

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "run.py"

pytestmark = pytest.mark.slow


def run_suite(only: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Run ``benchmarks/run.py --smoke --only ONLY`` with a private temp dir."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}  # loopback only
    env["TMPDIR"] = str(scratch)
    done = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--only", only, "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a target missed, at smoke size
    assert_nothing_left(scratch)
    document: dict[str, Any] = json.loads(out.read_text())
    assert document["suite"] == "smoke"
    # The table is printed: a header line, then a row per figure with its verdict.
    assert "figure" in done.stdout
    assert "target" in done.stdout
    for figure in document["figures"]:
        assert figure["name"] in done.stdout
        assert figure["verdict"] in ("pass", "FAIL", "-")
    return document, done.stdout


def assert_nothing_left(scratch: Path) -> None:
    """No temp file, and no process (an emulator, a scan) still running with our TMPDIR."""
    assert list(scratch.iterdir()) == []
    proc = Path("/proc")
    if not proc.is_dir():
        return
    marker = f"TMPDIR={scratch}".encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        assert marker not in environ.split(b"\0"), f"process {entry.name} left running"


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in document["figures"]}


def test_rate_benchmark(tmp_path: Path) -> None:
    document, _ = run_suite("rate", tmp_path)
    figures = by_name(document)
    for case in ("single 300/s", "single 500/s", "batch 100/s"):
        achieved = figures[f"rate {case}: achieved calls/s"]
        assert figures[f"rate {case}: max calls in a 1 s window"]["data"]["max_window"] > 0
        assert f"rate {case}: throttled answers" in figures
        (scan,) = achieved["data"]["runs"]
        # The emulator counted the command's calls, and the scan went through.
        assert scan["calls"] > 0
        assert scan["duration_seconds"] > 0
        assert scan["outcome"] in ("completed", "completed with errors", "aborted")


def test_address_benchmark(tmp_path: Path) -> None:
    document, _ = run_suite("address", tmp_path)
    figures = by_name(document)
    for case in (
        "single-270",
        "batch-96",
        "single-300-today",
        "single-90-of-100",
        "single-100-of-100-today",
    ):
        for disturbance in ("quiet", "hog", "jitter"):
            unit = f"address {case} {disturbance}"
            window = figures[f"{unit}: max calls from the address in a 1 s window"]
            (scan,) = window["data"]["runs"]
            # The emulator counted the scan's calls from its one address, through the
            # proxy too, and the scan went through.
            assert scan["calls"] > 0
            assert scan["address_max_1s"] > 0
            assert scan["api_max_1s"] > 0
            assert scan["outcome"] in ("completed", "completed with errors", "aborted")
            assert f"{unit}: throttled or blocked answers" in figures
            assert any(name.startswith(f"{unit}: achieved / aimed") for name in figures)


def test_cost_benchmark(tmp_path: Path) -> None:
    document, _ = run_suite("cost", tmp_path)
    figures = by_name(document)
    for protocol in ("https", "http"):
        for client in ("fleetscan", "client-only", "sdk-async", "sdk-sync"):
            figure = figures[f"cost {protocol} {client}: calls/s on one core (1 / CPU per call)"]
            (measured,) = figure["data"]["runs"]
            # Every call was answered: the clients really talked to the emulator.
            assert measured["calls"] > 0
            assert measured["ok"] == measured["calls"]
            assert measured["cpu"] > 0
        for baseline in ("sdk-async", "sdk-sync"):
            ratio = figures[f"cost {protocol}: fleetscan / {baseline}, calls per CPU-second"]
            assert ratio["data"]["ratio"] > 0
    hot_path = [f for name, f in figures.items() if name.startswith("hot path: ")]
    assert len(hot_path) == 5
    assert all(f["data"]["us"] > 0 for f in hot_path)


def test_memory_benchmark(tmp_path: Path) -> None:
    document, _ = run_suite("memory", tmp_path)
    figures = by_name(document)
    estimate = figures["memory: peak RSS of estimate, 20,000 IDs"]["data"]
    assert estimate["peak_mib"] >= estimate["one_id_mib"] > 0
    scan = figures["memory: peak RSS of scan, 200 -> 2,000 IDs"]["data"]
    assert set(scan["scan_peak_mib"]) == {"200", "2000"}
    assert all(peak > 0 for peak in scan["scan_peak_mib"].values())


def test_first_record_benchmark(tmp_path: Path) -> None:
    document, _ = run_suite("first", tmp_path)
    (figure,) = document["figures"]
    assert figure["name"] == "first record: 20,000 IDs in the input"
    assert len(figure["data"]["seconds"]) == len(figure["data"]["small_seconds"]) == 1
    assert all(s > 0 for s in figure["data"]["seconds"])


def test_redis_pacer_benchmark(tmp_path: Path) -> None:
    redis_binary()  # skips without redis-server (fails under CI=true)
    document, _ = run_suite("redis", tmp_path)
    figures = by_name(document)
    for case in ("local", "redis, lease 1", "redis, lease 8"):
        measured = figures[f"redis pacer {case}: permits/s at 500/s"]["data"]
        # Permits were really granted, timed and paid for.
        assert measured["permits"] > 0
        assert measured["cpu"] > 0
        assert 0 < measured["busiest_second"] <= 500
        if case != "local":
            trips = figures[f"redis pacer {case}: round trips per permit (dropped)"]["data"]
            assert trips["per_permit"] > 0
            ratio = figures[f"redis pacer {case} / local: client CPU per permit"]["data"]
            assert ratio["ratio"] > 0
    # Leasing saves round trips: fewer per permit with 8 than with 1.
    one = figures["redis pacer redis, lease 1: round trips per permit (dropped)"]["data"]
    eight = figures["redis pacer redis, lease 8: round trips per permit (dropped)"]["data"]
    assert eight["per_permit"] < one["per_permit"]


def test_shared_benchmark(tmp_path: Path) -> None:
    redis_binary()  # skips without redis-server (fails under CI=true)
    document, _ = run_suite("shared", tmp_path)
    figures = by_name(document)
    label = "3 processes, 3 addresses"
    for kind in ("local pacer, one process", "shared"):
        records = figures[f"{label}, {kind}: records over the shards"]
        # Every ID once over the shards, from both runs.
        assert records["data"] == {"records": 600, "unique": 600}
        assert (
            figures[f"{label}, {kind}: IDs/s together, middle 80% of the answers"]["data"]["steady"]
            > 0
        )
        for address, peak in figures[f"{label}, {kind}: busiest second per address"][
            "data"
        ].items():
            assert address in ("127.0.0.2", "127.0.0.3", "127.0.0.4")
            assert 0 < peak <= 300
    cost = figures[f"{label}: Redis round trips per call; CPU per call"]["data"]
    assert cost["round_trips_per_call"] > 0
    assert cost["cpu_per_call"] > 0


def test_audit_benchmark(tmp_path: Path) -> None:
    document, _ = run_suite("audit", tmp_path)
    figures = by_name(document)
    diff = figures["diff: peak RSS and time, 2,000 + 2,000 records"]["data"]
    # The generator's count of changes was checked against what the diff listed.
    assert diff["changes"] > 100
    assert diff["peak_mib"] > 0
    assert diff["input_bytes"] > 2 * 2_000 * 100
    history = figures["history: recording a night of 2,000 IDs"]["data"]
    assert history["transitions"] > 0  # the second night changed 5% of the devices
    assert history["first_seconds"] > 0
    assert history["second_seconds"] > 0
    assert history["db_bytes"] > 0
