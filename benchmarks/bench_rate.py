"""Rate accuracy: does ``fleetscan scan`` hold the configured rate, never above it?

    python benchmarks/bench_rate.py [--seconds 60] [--repeat 1] [--case single-300 ...]

Each case starts an emulator in its own process with the account limit set to the
rate asked for, answers 30-50 ms late (``--latency-ms 30 --jitter-ms 20``), and runs
the real command, ``python -m fleetscan scan --endpoint ... --qps N``, over enough IDs
to last ``--seconds``. The emulator stamps a request when its handler starts, so its
own pauses would count requests that waited in the socket as bunched: it runs with
the cyclic garbage collector off (``EmulatorProcess(gc_off=True)``), the client as
users run it. Measured:

- achieved calls/s: the emulator's request count over the span from the first to the
  last answer (the records' ``checked_at``), and its ratio to ``--qps``; the whole
  run's calls / ``duration_seconds`` (start-up and the last answer included) is shown
  beside it;
- the most requests the emulator saw in any sliding one-second window;
- throttled answers: the emulator's ``SystemOverFlow`` and source-IP refusals.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emulator_process import INSTANCE_ID, ROOT, EmulatorProcess, child_env
from figures import Figure, median, render
from fleet_ids import write_ids

__all__ = ["CASES", "RateCase", "RateRun", "run", "run_case"]

LATENCY = ("--latency-ms", "30", "--jitter-ms", "20")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateCase:
    """A mode and rate, and the emulator limits that match them."""

    name: str
    mode: str
    qps: int
    emulator_flags: tuple[str, ...]

    @property
    def api(self) -> str:
        return "QuerySessionByClientId" if self.mode == "single" else "BatchQuerySessionByClientIds"

    @property
    def ids_per_call(self) -> int:
        return 1 if self.mode == "single" else 10


CASES = (
    # The per-IP block (300/s) stays on: the default rate must never trip it.
    RateCase(name="single-300", mode="single", qps=300, emulator_flags=("--qps-single", "300")),
    # Loopback is one source IP: the block is lifted to reach the account limit.
    RateCase(
        name="single-500",
        mode="single",
        qps=500,
        emulator_flags=("--qps-single", "500", "--ip-limit", "0"),
    ),
    RateCase(name="batch-100", mode="batch", qps=100, emulator_flags=("--qps-batch", "100")),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateRun:
    """What one scan did, seen from the emulator and from fleetscan's summary."""

    calls: int
    span_seconds: float
    duration_seconds: float
    max_window: int
    throttled: int
    client_throttled: int
    outcome: str
    emulator_rss_mib: float | None

    def rate(self) -> float:
        """Calls per second between the first and the last answer."""
        return (self.calls - 1) / self.span_seconds if self.span_seconds > 0 else 0.0

    def whole_rate(self) -> float:
        """Calls per second over the whole run, start-up included."""
        return self.calls / self.duration_seconds if self.duration_seconds > 0 else 0.0


def run_case(case: RateCase, seconds: float, folder: Path) -> RateRun:
    """Scan for about ``seconds`` at ``case.qps`` against a fresh emulator."""
    n_ids = math.ceil(case.qps * seconds) * case.ids_per_call
    ids = write_ids(folder / f"{case.name}.txt", n_ids)
    out, summary = folder / f"{case.name}.ndjson", folder / f"{case.name}.summary.json"
    with EmulatorProcess(*case.emulator_flags, *LATENCY, gc_off=True) as emu:
        args = [
            sys.executable,
            "-m",
            "fleetscan",
            "scan",
            "--endpoint",
            emu.url,
            "--instance-id",
            INSTANCE_ID,
            "--mode",
            case.mode,
            "--qps",
            str(case.qps),
            "--quiet",
            "-o",
            str(out),
            "--summary",
            str(summary),
            str(ids),
        ]
        subprocess.run(
            args,
            cwd=ROOT,
            env=child_env(credentials=True),
            check=False,
            timeout=seconds * 3 + 60,
            stdout=subprocess.DEVNULL,
        )
        stats = emu.stats()
        emulator_rss = emu.rss_mib()
    report: dict[str, Any] = json.loads(summary.read_text())
    counters = stats["actions"][case.api]
    first, last = _answer_span(out)
    ids.unlink()
    out.unlink()
    return RateRun(
        calls=counters["requests"],
        span_seconds=last - first,
        duration_seconds=report["duration_seconds"],
        max_window=counters["max_requests_1s"],
        throttled=counters["throttled"] + counters["blocked"],
        client_throttled=report["calls_throttled"],
        outcome=report["outcome"],
        emulator_rss_mib=emulator_rss,
    )


def _answer_span(records: Path) -> tuple[float, float]:
    """The earliest and latest ``checked_at`` of a scan's records, in seconds."""
    first = last = None
    with open(records, "rb") as f:
        for line in f:
            stamp = json.loads(line)["checked_at"]
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            first = when if first is None else min(first, when)
            last = when if last is None else max(last, when)
    if first is None or last is None:
        raise RuntimeError(f"the scan wrote no records to {records}")
    return first, last


def figures_for(case: RateCase, runs: list[RateRun]) -> list[Figure]:
    """The three figures of one case (medians of rates; worst window; all throttling)."""
    rate = median(r.rate() for r in runs)
    ratio = rate / case.qps
    whole = median(r.whole_rate() for r in runs) / case.qps
    window = max(r.max_window for r in runs)
    throttled = sum(r.throttled for r in runs)
    client_throttled = sum(r.client_throttled for r in runs)
    seconds = median(r.duration_seconds for r in runs)
    unit = f"{case.mode} {case.qps}/s"
    outcomes = sorted({r.outcome for r in runs})
    return [
        Figure(
            name=f"rate {unit}: achieved calls/s",
            target=f">= {0.99 * case.qps:g} (ratio >= 0.99)",
            measured=f"{rate:.1f} (ratio {ratio:.4f}; whole run {whole:.4f}; {seconds:.0f} s)",
            passed=ratio >= 0.99,
            data={"runs": [_as_dict(r) for r in runs], "ratio": ratio, "whole_ratio": whole},
        ),
        Figure(
            name=f"rate {unit}: max calls in a 1 s window",
            target=f"<= {case.qps}",
            measured=str(window),
            passed=window <= case.qps,
            data={"max_window": window},
        ),
        Figure(
            name=f"rate {unit}: throttled answers",
            target="0",
            measured=f"{throttled} (fleetscan counted {client_throttled}; {', '.join(outcomes)})",
            passed=throttled == 0,
            data={"throttled": throttled},
        ),
    ]


def _as_dict(r: RateRun) -> dict[str, Any]:
    return {
        "calls": r.calls,
        "span_seconds": r.span_seconds,
        "duration_seconds": r.duration_seconds,
        "rate": r.rate(),
        "max_window": r.max_window,
        "throttled": r.throttled,
        "client_throttled": r.client_throttled,
        "outcome": r.outcome,
        "emulator_rss_mib": r.emulator_rss_mib,
    }


def run(
    *,
    seconds: float = 60.0,
    repeat: int = 1,
    cases: tuple[RateCase, ...] = CASES,
    folder: Path | None = None,
    log: Any = None,
) -> list[Figure]:
    """Every case, ``repeat`` times; the figures."""
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-rate-", dir=folder) as tmp:
        for case in cases:
            runs = []
            for i in range(repeat):
                if log:
                    log(f"rate: {case.name} run {i + 1}/{repeat} (~{seconds:.0f} s)")
                runs.append(run_case(case, seconds, Path(tmp)))
            figures += figures_for(case, runs)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES])
    args = parser.parse_args()
    cases = tuple(c for c in CASES if not args.case or c.name in args.case)
    figures = run(
        seconds=args.seconds,
        repeat=args.repeat,
        cases=cases,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(render(figures), end="")


if __name__ == "__main__":
    main()
