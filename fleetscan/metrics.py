"""A scan's figures in Prometheus' text format, for node_exporter's textfile collector.

::

    write_metrics("/var/lib/node_exporter/fleetscan.prom", summary)

The file is written to a temporary name in the same directory, flushed to disk and
renamed over the old one, so the collector never reads half a file. Every sample is
labelled with the instance and mode. ``fleetscan_last_completed_scan_timestamp_seconds``
is carried over from the previous file when this scan did not complete (interrupted,
aborted), so an alert on its age fires when the nightly scan stops finishing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping

from fleetscan.summary import ScanSummary

__all__ = ["COMPLETED_OUTCOMES", "render_metrics", "write_metrics"]

# Outcomes that count as a completed scan (every ID got a record).
COMPLETED_OUTCOMES = frozenset({"completed", "completed with errors"})

_LAST_COMPLETED = "fleetscan_last_completed_scan_timestamp_seconds"
_SAMPLE = re.compile(rf"^{_LAST_COMPLETED}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_metrics(
    summary: ScanSummary,
    *,
    ids: Mapping[str, int] | None = None,
    last_completed: float | None = None,
) -> str:
    """The exposition text. ``ids`` overrides the summary's counts by status (a resumed
    scan's whole counts, from the history); ``last_completed`` is the previous file's."""
    labels = f'instance_id="{_escape(summary.instance_id)}",mode="{_escape(summary.mode)}"'
    counts = ids or {
        "online": summary.ids_online,
        "offline": summary.ids_offline,
        "error": summary.ids_error,
        "invalid": summary.ids_invalid,
    }
    ended = summary.ended_at.timestamp()
    if summary.outcome in COMPLETED_OUTCOMES:
        last_completed = ended
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for extra, value in samples:
            lines.append(f"{name}{{{labels}{extra}}} {_number(value)}")

    family(
        "fleetscan_ids",
        "gauge",
        "Client IDs of the last scan, by status.",
        [(f',status="{s}"', counts.get(s, 0)) for s in ("online", "offline", "error", "invalid")],
    )
    family(
        "fleetscan_ids_not_scanned",
        "gauge",
        "Unique client IDs the last scan read but left without a record.",
        [("", summary.ids_not_scanned)],
    )
    family(
        "fleetscan_calls",
        "gauge",
        "HTTP attempts of the last scan, by outcome.",
        [
            (',outcome="sent"', summary.calls_sent),
            (',outcome="succeeded"', summary.calls_succeeded),
            (',outcome="throttled"', summary.calls_throttled),
            (',outcome="retried"', summary.calls_retried),
            (',outcome="failed"', summary.calls_failed),
            (',outcome="timed_out"', summary.calls_timed_out),
        ],
    )
    family(
        "fleetscan_billable_transactions",
        "gauge",
        "Messaging transactions the last scan cost (successful calls).",
        [("", summary.billable_transactions)],
    )
    family(
        "fleetscan_scan_duration_seconds",
        "gauge",
        "How long the last scan ran.",
        [("", summary.duration_seconds)],
    )
    family(
        "fleetscan_scan_peak_tps",
        "gauge",
        "Billable transactions in the busiest second of the last scan.",
        [("", summary.peak_tps)],
    )
    family(
        "fleetscan_scan_completed",
        "gauge",
        "1 when the last scan completed (every ID has a record), else 0.",
        [("", 1 if summary.outcome in COMPLETED_OUTCOMES else 0)],
    )
    family(
        "fleetscan_last_scan_timestamp_seconds",
        "gauge",
        "When the last scan ended, in seconds since the epoch.",
        [("", ended)],
    )
    if last_completed is not None:
        family(
            _LAST_COMPLETED,
            "gauge",
            "When the last completed scan ended, in seconds since the epoch.",
            [("", last_completed)],
        )
    return "\n".join(lines) + "\n"


def _previous_last_completed(path: str) -> float | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1024 * 1024)
    except (OSError, UnicodeDecodeError):
        return None
    found = _SAMPLE.search(text)
    if found is None:
        return None
    try:
        return float(found.group(1))
    except ValueError:
        return None


def write_metrics(
    path: str | os.PathLike[str],
    summary: ScanSummary,
    *,
    ids: Mapping[str, int] | None = None,
) -> None:
    """Write the metrics file atomically (temporary file, fsync, rename)."""
    name = os.fspath(path)
    text = render_metrics(summary, ids=ids, last_completed=_previous_last_completed(name))
    directory = os.path.dirname(os.path.abspath(name))
    # node_exporter reads only *.prom: the temporary name must not end so.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(name)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
