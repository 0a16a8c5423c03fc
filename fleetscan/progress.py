"""Progress on stderr: a live line on a terminal, a plain log line every few seconds
otherwise, nothing with ``--quiet``. Never on stdout, which carries records."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from fleetscan.summary import ScanCounters

__all__ = ["LIVE_INTERVAL", "LOG_INTERVAL", "LineTotal", "Progress", "count_lines"]

LIVE_INTERVAL = 0.5
LOG_INTERVAL = 10.0


class Progress:
    """Reports a scan's counters until cancelled."""

    def __init__(
        self,
        counters: ScanCounters,
        *,
        stream: TextIO,
        live: bool,
        total: Callable[[], int | None] = lambda: None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = counters
        self.stream = stream
        self.live = live
        self.total = total
        self.interval = interval or (LIVE_INTERVAL if live else LOG_INTERVAL)
        self.clock = clock
        self._start = clock()
        # (time, done) one interval ago, for the current rate.
        self._last = (self._start, 0)

    def line(self) -> str:
        c = self.counters
        now = self.clock()
        done = c.done
        last_time, last_done = self._last
        rate = (done - last_done) / (now - last_time) if now > last_time else 0.0
        self._last = (now, done)
        total = self.total()
        if total:
            left = max(0, total - done - c.duplicates)
            eta = _duration(left / rate) if rate > 0 else "?"
            head = f"{done}/~{total} IDs"
        else:
            eta = ""
            head = f"{done} IDs (read {c.read})"
        parts = [
            head,
            f"{rate:.0f}/s",
            f"online {c.online} offline {c.offline} invalid {c.invalid} error {c.errors}",
            f"throttled {c.calls_throttled}",
        ]
        if eta:
            parts.append(f"ETA {eta}")
        return "  ".join(parts)

    def report(self) -> None:
        text = self.line()
        if self.live:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(f"fleetscan: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Remove the live line before the summary is printed."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.report()


def count_lines(path: str) -> int:
    """Lines in a plain file, read in large blocks (an upper bound on its IDs)."""
    lines = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
    return lines


class LineTotal:
    """An upper bound on the IDs to scan, counted in a thread from plain input files.

    None until counted, and for stdin or gzip input (which cannot be read twice cheaply).
    """

    def __init__(self, inputs: Sequence[str]) -> None:
        self.value: int | None = None
        files = [p for p in inputs if p != "-" and not p.endswith(".gz")]
        if files and len(files) == len(inputs):
            threading.Thread(target=self._count, args=(files,), daemon=True).start()

    def _count(self, files: Sequence[str]) -> None:
        with contextlib.suppress(OSError):
            self.value = sum(count_lines(p) for p in files)

    def __call__(self) -> int | None:
        return self.value


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
