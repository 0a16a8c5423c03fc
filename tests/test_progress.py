"""Progress on stderr: a live line on a terminal, plain log lines otherwise, none with
--quiet; never on stdout."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from emulator_fixtures import ids

from fleetscan import progress
from fleetscan.cli import main
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)
from fleetscan.progress import LIVE_INTERVAL, LOG_INTERVAL, LineTotal, Progress, count_lines
from fleetscan.summary import ScanCounters

CLEAR = "\r\x1b[K"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    *, live: bool, total: int | None = None, interval: float | None = None
) -> tuple[Progress, ScanCounters, io.StringIO, Clock]:
    counters = ScanCounters()
    stream = io.StringIO()
    clock = Clock()
    shown = Progress(
        counters, stream=stream, live=live, total=lambda: total, interval=interval, clock=clock
    )
    return shown, counters, stream, clock


def test_a_terminal_gets_one_live_line_rewritten_in_place() -> None:
    shown, counters, stream, clock = make(live=True, total=1000)
    counters.online, counters.offline, counters.invalid, counters.errors = 60, 30, 8, 2
    counters.calls_throttled = 4
    clock.now += 2.0
    shown.report()
    first = stream.getvalue()
    assert first == CLEAR + first[len(CLEAR) :]
    assert "\n" not in first
    assert first == (
        f"{CLEAR}100/~1000 IDs  50/s  online 60 offline 30 invalid 8 error 2  throttled 4"
        "  ETA 0m18s"
    )
    counters.online += 100
    clock.now += 1.0
    shown.report()
    second = stream.getvalue()[len(first) :]
    assert second.startswith(CLEAR)
    assert second.startswith(f"{CLEAR}200/~1000 IDs  100/s")  # the rate of the last interval
    shown.clear()
    assert stream.getvalue().endswith(second + CLEAR)
    assert shown.interval == LIVE_INTERVAL


def test_elsewhere_plain_lines_and_nothing_to_clear() -> None:
    shown, counters, stream, clock = make(live=False)
    counters.read, counters.offline = 12, 10
    clock.now += 10.0
    shown.report()
    shown.clear()
    assert stream.getvalue() == (
        "fleetscan: 10 IDs (read 12)  1/s  online 0 offline 10 invalid 0 error 0  throttled 0\n"
    )
    assert shown.interval == LOG_INTERVAL


def test_eta_is_unknown_until_ids_complete_and_counts_hours() -> None:
    shown, counters, _stream, clock = make(live=False, total=1_000_000)
    clock.now += 1.0
    assert shown.line().endswith("ETA ?")
    counters.online = 100
    clock.now += 1.0
    assert shown.line().endswith("ETA 2h46m")
    # Duplicates are lines of the total that need no call.
    counters.duplicates = 999_000
    counters.online = 200
    clock.now += 1.0
    assert shown.line().endswith("ETA 0m08s")


def test_a_rate_with_no_time_passed_is_zero() -> None:
    shown, counters, _, _ = make(live=False, total=10)
    counters.online = 5
    assert "  0/s  " in shown.line()


async def test_run_reports_every_interval_until_cancelled() -> None:
    shown, _counters, stream, _ = make(live=False, interval=0.01)
    task = asyncio.create_task(shown.run())
    for _ in range(500):
        if stream.getvalue().count("\n") >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert all(line.startswith("fleetscan: 0 IDs (read 0)  0/s") for line in lines)


def test_count_lines(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"a\nb\n\nc\n" * 300_000)  # more than one read block
    assert count_lines(str(path)) == 1_200_000
    (tmp_path / "empty").write_bytes(b"")
    assert count_lines(str(tmp_path / "empty")) == 0


# --- through the command line ----------------------------------------------------------------


class TerminalErr(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedEmulator]:
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "FLEETSCAN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    config = EmulatorConfig(limits=Limits(qps_single=5000, qps_batch=5000, ip_limit=0))
    with run_emulator_in_thread(config) as emulator:
        yield emulator


@pytest.mark.parametrize("quiet", [False, True])
def test_a_terminal_gets_the_live_line_cleared_before_the_summary(
    emu: ThreadedEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
    quiet: bool,
) -> None:
    monkeypatch.setattr(progress, "LIVE_INTERVAL", 0.05)
    terminal = TerminalErr()
    monkeypatch.setattr(sys, "stderr", terminal)
    inputs = tmp_path / "ids.txt"
    inputs.write_text("".join(f"{cid}\n" for cid in ids(60)))
    args = ["scan", str(inputs), "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID]
    code = main([*args, "--qps", "100", *(["--quiet"] if quiet else [])])
    assert code == 0
    records = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert len(records) == 60
    err = terminal.getvalue()
    if quiet:
        assert err == ""
        return
    live, _, after = err.rpartition(CLEAR)
    assert live.count(CLEAR) >= 3  # a line rewritten in place, not a log
    assert "/~60 IDs" in live
    assert "\n" not in live
    assert after.startswith("fleetscan: completed")


def test_line_total_counts_plain_files_but_not_stdin_or_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "ids.txt"
    plain.write_bytes(b"a\nb\nc\n")
    total = LineTotal([str(plain), str(plain)])
    deadline = time.monotonic() + 5
    while total() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert total() == 6
    # Mixed with a plain file, stdin or gzip input means no count at all. A counter
    # that started would still be running (it shows up as a new thread) or have
    # finished (value set); the value is read after the threads, so neither slips by.
    gz = tmp_path / "more.txt.gz"
    gz.write_bytes(b"")
    for inputs in (["-"], [str(plain), "-"], [str(plain), str(gz)]):
        before = set(threading.enumerate())
        uncounted = LineTotal(inputs)
        started = set(threading.enumerate()) - before
        assert not started, inputs
        assert uncounted() is None, inputs
