"""Time to first record: how soon ``fleetscan scan`` writes its first line of output.

    python benchmarks/bench_first_record.py [--ids 10000000] [--repeat 3]

The real command, ``python -m fleetscan scan --endpoint ... FILE``, runs as a child
process with stdout on a pipe against an emulator in another process (30-50 ms
latency, as in the rate runs). The clock starts just before the child is spawned
(interpreter start-up and imports count) and stops when the first record's line
arrives on the pipe; then the scan is stopped with SIGTERM, as a user's Ctrl-C. The
same is timed on a 100-ID file, to show the size of the input does not matter.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from emulator_process import INSTANCE_ID, ROOT, EmulatorProcess, child_env
from figures import Figure, median, render
from fleet_ids import write_ids

__all__ = ["first_record_seconds", "run"]

TARGET_SECONDS = 1.0
SMALL_IDS = 100
WAIT_SECONDS = 60.0
LATENCY = ("--latency-ms", "30", "--jitter-ms", "20")


def first_record_seconds(path: Path, url: str) -> tuple[float, bytes]:
    """Seconds from spawning ``fleetscan scan PATH`` to its first record; that record."""
    args = [sys.executable, "-m", "fleetscan", "scan", "--endpoint", url]
    args += ["--instance-id", INSTANCE_ID, "--quiet", str(path)]
    start = time.perf_counter()
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=child_env(credentials=True),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = b""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = start + WAIT_SECONDS
            while not line.endswith(b"\n"):
                if not selector.select(timeout=max(0.0, deadline - time.perf_counter())):
                    raise RuntimeError(f"no record within {WAIT_SECONDS:g} s")
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"the scan ended without a record ({process.wait()})")
                line += chunk
        seconds = time.perf_counter() - start
    finally:
        _stop(process)
    return seconds, line.split(b"\n", 1)[0]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop), drain stdout so it can finish, SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    assert process.stdout is not None
    try:
        process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def run(
    *,
    ids: int = 10_000_000,
    repeat: int = 3,
    folder: Path | None = None,
    big_input: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Figure]:
    """Time to first record on a large and a small input, ``repeat`` times each."""
    say = log or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-first-", dir=folder) as tmp:
        scratch = Path(tmp)
        if big_input is None:
            say(f"first record: writing {ids:,} IDs")
            big_input = write_ids(scratch / "big.txt", ids)
        small = write_ids(scratch / "small.txt", SMALL_IDS)
        times: dict[Path, list[float]] = {big_input: [], small: []}
        with EmulatorProcess(*LATENCY) as emu:
            for i in range(repeat):
                for path in (big_input, small):
                    say(f"first record: {path.name}, run {i + 1}/{repeat}")
                    seconds, record = first_record_seconds(path, emu.url)
                    if not record.startswith(b'{"client_id":'):
                        raise RuntimeError(f"the first line is not a record: {record[:200]!r}")
                    times[path].append(seconds)
    big, little = median(times[big_input]), median(times[small])
    return [
        Figure(
            name=f"first record: {ids:,} IDs in the input",
            target=f"<= {TARGET_SECONDS:g} s",
            measured=f"{big:.2f} s (median of {repeat}; "
            f"{SMALL_IDS} IDs: {little:.2f} s; process start included)",
            passed=big <= TARGET_SECONDS,
            data={"seconds": times[big_input], "small_seconds": times[small]},
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures = run(ids=args.ids, repeat=args.repeat, log=lambda m: print(m, file=sys.stderr))
    print(render(figures), end="")


if __name__ == "__main__":
    main()
