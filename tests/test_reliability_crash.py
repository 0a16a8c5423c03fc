"""Crashes and interruptions of ``fleetscan scan`` run as a real process (issue 5).

- ``kill -9`` at random moments, then ``--resume`` until done: the file ends with every
  unique ID exactly once, with its true status, every line whole; no ID that already
  had a final record is asked again (the emulator's per-ID counters say so).
- SIGTERM and SIGINT: exit 130, the summary printed and written, the output valid,
  and ``--resume`` finishes it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Faults,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)

REPO = Path(__file__).resolve().parent.parent
INVALID = ["GID_crash@@@bad id", "GID_crash@@@a:b", "nope"]
FINAL = ("online", "offline", "invalid")


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    # A few ms per answer, so a kill lands with calls in flight.
    config = EmulatorConfig(
        limits=Limits(qps_single=5000, ip_limit=0), faults=Faults(latency_ms=2, jitter_ms=4)
    )
    with run_emulator_in_thread(config) as emulator:
        yield emulator


def write_input(folder: Path, count: int) -> tuple[Path, list[str]]:
    """A file of ``count`` valid IDs, a repeat of every fifth, and a few invalid ones."""
    valid = [f"GID_crash@@@dev{i}" for i in range(count)]
    lines = [*valid, *valid[::5], *INVALID]
    random.Random(1).shuffle(lines)
    path = folder / "ids.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path, valid


def start(emu: ThreadedEmulator, folder: Path, *options: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env.update(
        HOME=str(folder),
        PYTHONPATH=str(REPO),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEFAULT_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEFAULT_ACCESS_KEY_SECRET,
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetscan",
            "scan",
            "--endpoint",
            emu.url,
            "--instance-id",
            DEFAULT_INSTANCE_ID,
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=folder,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode()


def whole_records(path: Path) -> list[dict[str, Any]]:
    """The records of every complete line (a kill may leave a torn last one)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [orjson.loads(line) for line in complete.splitlines()]


def final_ids(path: Path) -> set[str]:
    return {r["client_id"] for r in whole_records(path) if r["status"] in FINAL}


def wait_for_records(proc: subprocess.Popen[bytes], path: Path, count: int) -> None:
    """Until ``path`` holds ``count`` lines (or the process ends)."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.005)


def check_not_asked_again(
    done: set[str], before: Mapping[str, int], after: Mapping[str, int]
) -> None:
    again = sorted(cid for cid in done if after.get(cid, 0) != before.get(cid, 0))
    assert again == [], f"{len(again)} IDs with a final record were queried again"


def check_complete(path: Path, emu: ThreadedEmulator, valid: list[str]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    records = [orjson.loads(line) for line in lines]  # every line parses
    ids = [r["client_id"] for r in records]
    assert len(ids) == len(set(ids)), "an ID appears twice"
    assert sorted(ids) == sorted([*valid, *INVALID])
    by_id = {r["client_id"]: r for r in records}
    for cid in valid:
        assert by_id[cid]["online"] is emu.fleet.is_online(cid), cid
    for cid in INVALID:
        assert by_id[cid]["status"] == "invalid"


def test_kill_9_at_random_moments_then_resume_until_done(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source, valid = write_input(tmp_path, 1000)
    out = tmp_path / "out.ndjson"
    options = ("--qps", "500", "--quiet", "-o", str(out), str(source))
    rng = random.Random(20261125)
    killed = 0
    for run in range(8):
        done, before = final_ids(out), dict(emu.stats().client_id_queries)
        proc = start(emu, tmp_path, *options, *(["--resume"] if run else []))
        if killed < 3:
            # Some records first, so the kill lands mid-scan, then a random moment.
            wait_for_records(proc, out, 1)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
        code, err = finish(proc)
        check_not_asked_again(done, before, emu.stats().client_id_queries)
        if code == -signal.SIGKILL:
            killed += 1
            if out.read_bytes().endswith(b"\n") and killed == 1:
                # What a kill in the middle of a write leaves, whether or not one did.
                with out.open("ab") as f:
                    f.write(b'{"client_id":"GID_crash@@@dev1","instance_id":"mqtt-cn-em')
            continue
        assert "Traceback" not in err
        if code == 0:
            break
    assert code == 0, err
    assert killed == 3, "every kill landed before the scan was done"
    check_complete(out, emu, valid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_scan_with_130_a_summary_and_a_resumable_file(
    emu: ThreadedEmulator, tmp_path: Path, sig: signal.Signals
) -> None:
    source, valid = write_input(tmp_path, 600)
    out, summary = tmp_path / "out.ndjson", tmp_path / "summary.json"
    options = ("-o", str(out), "--summary", str(summary), str(source))
    proc = start(emu, tmp_path, "--qps", "200", *options)
    wait_for_records(proc, out, 30)
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    assert "fleetscan: interrupted" in err  # the summary, on stderr
    report = orjson.loads(summary.read_bytes())
    assert report["outcome"] == "interrupted"
    assert report["ids_not_scanned"] > 0
    # The output is valid: whole lines, true statuses, nothing answered left out.
    records = whole_records(out)
    assert out.read_bytes().endswith(b"\n")
    assert len(records) == report["ids_online"] + report["ids_offline"] + report["ids_invalid"]
    assert all(r["status"] in FINAL for r in records)
    assert all(r["online"] is emu.fleet.is_online(r["client_id"]) for r in records if r["api"])
    assert (
        emu.stats().successes
        == report["billable_transactions"]
        == len([r for r in records if r["api"]])
    )

    done, before = final_ids(out), dict(emu.stats().client_id_queries)
    code, err = finish(start(emu, tmp_path, "--qps", "500", "--quiet", "--resume", *options))
    assert code == 0, err
    check_not_asked_again(done, before, emu.stats().client_id_queries)
    check_complete(out, emu, valid)
    assert orjson.loads(summary.read_bytes())["ids_resumed"] == len(done)
