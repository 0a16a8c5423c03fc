"""Nothing lost at the edges (issue 8), as a user meets them: ``fleetscan scan`` as a real
process whose pipe closes, whose disk is full, whose service dies, that gets signals at
start-up, or that shares a terminal with its records.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    config = EmulatorConfig(limits=Limits(qps_single=5000, ip_limit=0), faults=Faults(latency_ms=2))
    with run_emulator_in_thread(config) as emulator:
        yield emulator


def env_for(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "FLEETSCAN"))}
    env.update(
        HOME=str(folder),
        PYTHONPATH=str(REPO),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEFAULT_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEFAULT_ACCESS_KEY_SECRET,
    )
    return env


def write_ids(folder: Path, n: int, name: str = "ids.txt") -> Path:
    path = folder / name
    path.write_text("".join(f"GID_edge@@@d{i}\n" for i in range(n)))
    return path


def scan(url: str, folder: Path, *options: str, **popen: Any) -> subprocess.Popen[bytes]:
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetscan",
            "scan",
            "--endpoint",
            url,
            "--instance-id",
            DEFAULT_INSTANCE_ID,
            *options,
        ],
        env=env_for(folder),
        cwd=folder,
        **popen,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 90) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, (err or b"").decode()


def records_of(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


# --- 6, 7: a closed pipe or a full disk stops the scan at once -------------------------------


def test_a_closed_pipe_stops_the_scan_at_once_with_a_message_a_summary_and_exit_4(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 3000)
    # `fleetscan scan ids.txt | head -1`: read one line, then close the pipe.
    proc = scan(
        emu.url,
        tmp_path,
        str(source),
        "--qps",
        "300",
        "--concurrency",
        "8",
        "--summary",
        "s.json",
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith(b'{"client_id"')
    proc.stdout.close()
    code, err = finish(proc)
    assert code == 4, err
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
    assert "stopped: cannot write the records to stdout: Broken pipe (EPIPE)" in err
    assert "fleetscan: output error" in err  # the summary, on stderr
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["outcome"] == "output error"
    # Nothing more went on the wire than the pipe could take and the calls in flight
    # (at most 64 KiB of records, ~300): not the 3,000 the old scan kept billing.
    sent = emu.stats().requests
    assert sent == summary["calls_sent"]
    assert sent < 700, sent
    assert summary["ids_not_scanned"] > 0


def test_a_full_disk_stops_the_scan_at_once_with_a_message_a_summary_and_exit_4(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 3000)
    proc = scan(
        emu.url,
        tmp_path,
        str(source),
        "-o",
        "/dev/full",
        "--concurrency",
        "8",
        "--summary",
        "s.json",
    )
    code, err = finish(proc)
    assert code == 4, err
    assert "Traceback" not in err
    assert "stopped: cannot write the records to /dev/full: No space left on device (ENOSPC)" in err
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["outcome"] == "output error"
    # The first flush failed (after at most 100 ms of records): only those calls and the
    # ones in flight were sent, none after.
    sent = emu.stats().requests
    assert sent == summary["calls_sent"]
    assert sent < 150, sent
    assert any("could not be written" in w for w in summary["warnings"])


def test_resume_on_a_pipe_is_refused_instead_of_reading_its_own_output(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 10)
    # `fleetscan scan -o /dev/stdout --resume ids.txt | wc -l` hung reading its own pipe.
    proc = scan(
        emu.url,
        tmp_path,
        str(source),
        "-o",
        "/dev/stdout",
        "--resume",
        stdout=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert b"regular -o FILE only" in err
    assert out == b""
    assert emu.stats().requests == 0


# --- 8: the service dies mid-scan ------------------------------------------------------------


@contextlib.contextmanager
def emulator_process(folder: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetscan", "emulator", "--port", "0", "--ip-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("url: "), first
        yield proc, first.removeprefix("url: ").strip()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def stats_of(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as response:
        data: dict[str, Any] = orjson.loads(response.read())
        return data


def test_a_dead_service_stops_the_scan_after_the_outage_timeout_leaving_the_rest_for_resume(
    tmp_path: Path,
) -> None:
    source = write_ids(tmp_path, 4000)
    out = tmp_path / "out.ndjson"
    options = ("-o", str(out), "--summary", "s.json", "--qps", "200", str(source))
    with emulator_process(tmp_path) as (emulator, url):
        proc = scan(url, tmp_path, *options, "--outage-timeout", "8", "--timeout", "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(records_of(out)) < 200):
            time.sleep(0.02)
        emulator.kill()  # the service is gone mid-scan
        killed = time.monotonic()
        code, err = finish(proc)
        took = time.monotonic() - killed
    assert code == 3, err
    assert "Traceback" not in err
    assert "the service gave no answer for 8 s" in err
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["outcome"] == "aborted"
    records = records_of(out)
    # No error records for an outage: the IDs it hit are left for --resume.
    assert {r["status"] for r in records} <= {"online", "offline"}
    assert summary["ids_error"] == 0
    assert summary["ids_not_scanned"] > 0
    # It stopped within seconds of the timeout, and sent a bounded number of attempts
    # while nothing answered (the calls in flight, the budget's retries, ~1 probe/s):
    # the old scan sent 12,588 in 117 s.
    assert took < 60, took
    assert summary["calls_failed"] < 600, summary["calls_failed"]

    # The service is back (a new process): --resume finishes, every ID exactly once,
    # and none that had its record is asked again.
    done = len(records)
    with emulator_process(tmp_path) as (_, url):
        code, err = finish(scan(url, tmp_path, *options, "--resume", "--quiet"))
        assert code == 0, err
        again = stats_of(url)
    records = records_of(out)
    ids = [r["client_id"] for r in records]
    assert sorted(ids) == sorted(f"GID_edge@@@d{i}" for i in range(4000))
    assert {r["status"] for r in records} <= {"online", "offline"}
    assert again["successes"] == 4000 - done


# --- 11: signals at start-up -----------------------------------------------------------------


def test_sigterm_during_the_resume_rewrite_exits_130_leaving_no_temporary_file(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source = write_ids(tmp_path, 10)
    out = tmp_path / "out.ndjson"
    line = (
        b'{"client_id":"GID_edge@@@e%d","instance_id":"mqtt-cn-emulator","status":"error",'
        b'"online":null,"checked_at":"2026-11-25T18:00:00.123Z","api":"QuerySessionByClientId",'
        b'"request_id":null,"attempts":6,"error":{"code":"Timeout","message":"x",'
        b'"http_status":null}}\n'
    )
    ok = line.replace(b'"status":"error"', b'"status":"offline"').replace(b"@e", b"@k")
    # Records to carry over and error records to drop: the rewrite takes a while.
    data = b"".join(ok % i for i in range(150_000)) + b"".join(line % i for i in range(50_000))
    out.write_bytes(data)
    proc = scan(emu.url, tmp_path, "-o", str(out), "--resume", "--summary", "s.json", str(source))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.endswith(".resume") for p in tmp_path.iterdir()):
            break
        time.sleep(0.002)
    else:
        pytest.fail("the rewrite's temporary file never appeared")
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    assert "fleetscan: interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert out.read_bytes() == data  # the old file whole: the rewrite never happened
    assert emu.stats().requests == 0


def wait_until_sigterm_is_caught(proc: subprocess.Popen[bytes]) -> None:
    """Until the process has a handler for SIGTERM (its SigCgt mask in /proc says so)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = next(ln for ln in status.splitlines() if ln.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.001)
    pytest.fail("fleetscan never took over SIGTERM")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_any_moment_of_start_up_exits_130_without_a_traceback(
    emu: ThreadedEmulator, tmp_path: Path, sig: signal.Signals
) -> None:
    source = write_ids(tmp_path, 2000)
    (tmp_path / "out.ndjson").write_bytes(b'{"earlier": 1}\n')
    for delay in (0.0, 0.05, 0.15, 0.3, 0.6, 1.0):
        proc = scan(emu.url, tmp_path, "-o", "out.ndjson", "--qps", "100", str(source))
        # From fleetscan's first line of code on: before it, the interpreter is still
        # starting (tens of ms) and Python's own defaults apply.
        wait_until_sigterm_is_caught(proc)
        time.sleep(delay)
        proc.send_signal(sig)
        code, err = finish(proc)
        assert code == 130, (delay, err)
        assert "Traceback" not in err, (delay, err)
        assert "KeyboardInterrupt" not in err, (delay, err)
        hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert hidden == [], (delay, hidden)


# --- 14: records and progress on one terminal --------------------------------------------------


def test_records_on_the_terminal_never_share_a_line_with_the_live_progress(
    tmp_path: Path,
) -> None:
    source = write_ids(tmp_path, 400)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetscan", "scan", "--emulator", "--qps", "100", str(source)],
        stdin=subprocess.DEVNULL,
        stdout=child_fd,
        stderr=child_fd,
        env=env_for(tmp_path),
        cwd=tmp_path,
    )
    os.close(child_fd)
    seen = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main_fd)
    assert proc.returncode == 0, seen[-2000:]
    lines = seen.replace(b"\r\n", b"\n").split(b"\n")
    records = [ln for ln in lines if b'"client_id"' in ln]
    assert len(records) == 400
    # Each record alone on its line: no progress text before it.
    assert all(ln.startswith(b'{"client_id"') for ln in records), [
        ln for ln in records if not ln.startswith(b'{"client_id"')
    ][:3]


# --- 15: the emulator's URL --------------------------------------------------------------------


def test_the_emulators_printed_url_takes_a_path_as_printed(tmp_path: Path) -> None:
    with emulator_process(tmp_path) as (_, url):
        assert not url.endswith("/")
        assert stats_of(url)["requests"] == 0  # curl URL/_emulator/stats
