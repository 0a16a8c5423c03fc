"""The audit commands of ``fleetscan`` (diff, history, report) and the scan's two
audit options (``--history``, ``--metrics-file``): parsing and glue only, the work is
in `fleetscan.diff`, `fleetscan.history`, `fleetscan.report` and `fleetscan.metrics`.

``cli.py`` calls `add_commands` and `add_scan_options` while building its parser, and
drives a `ScanAudit` around each scan: `ScanAudit.open` with the scan's checks (before
any call or write), `ScanAudit.begin` before the output is opened, `ScanAudit.sinks`
given to `ScanJob.run` beside the NDJSON writer, `ScanAudit.finish` with the summary,
and `ScanAudit.close` at the very end.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

import orjson

from fleetscan.errors import UsageError

if TYPE_CHECKING:
    from fleetscan.engine import ScanSettings
    from fleetscan.history import HistoryRecorder
    from fleetscan.output import ResumeState
    from fleetscan.sink import Sink
    from fleetscan.summary import ScanSummary

__all__ = ["ScanAudit", "add_commands", "add_scan_options", "parse_duration"]

log = logging.getLogger("fleetscan")

_EXIT_OK = 0

_PART = r"(\d+(?:\.\d+)?)(w|d|h|min|m|s)"
_DURATION = re.compile(rf"(?:{_PART})+")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``3d``, ``12h``, ``1d12h``, ``90m``, ``45s``, ``2w``; a bare number is days."""
    value = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return timedelta(days=float(value))
    if not _DURATION.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3d, 12h, 1d12h, 90m)")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in re.findall(_PART, value))
    return timedelta(seconds=seconds)


def _time(text: str) -> Any:
    from fleetscan.history.queries import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# --- the scan's options ------------------------------------------------------------------


def add_scan_options(group: argparse._ArgumentGroup) -> None:
    """``--history`` and ``--metrics-file`` of ``fleetscan scan``."""
    group.add_argument(
        "--history",
        metavar="DB",
        help="record the scan in this SQLite history (created when missing)",
    )
    group.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write the scan's figures in Prometheus text format, atomically, at the end",
    )


class ScanAudit:
    """What ``--history`` and ``--metrics-file`` add to one scan (nothing without them)."""

    def __init__(
        self,
        *,
        recorder: HistoryRecorder | None = None,
        metrics_file: str | None = None,
    ) -> None:
        self.recorder = recorder
        self.metrics_file = metrics_file
        self._begun = False
        # The history's writer failed mid-scan: said as the scan's stop reason, once.
        self._failed = False

    @classmethod
    def open(cls, args: argparse.Namespace) -> ScanAudit:
        """With the scan's checks: open (and migrate) the history, check where the
        metrics go. A refused history file is a usage error (exit 2) before any call."""
        metrics_file = getattr(args, "metrics_file", None)
        if metrics_file:
            directory = os.path.dirname(os.path.abspath(metrics_file))
            if not os.path.isdir(directory):
                raise UsageError(f"--metrics-file {metrics_file}: no directory {directory}")
        history = getattr(args, "history", None)
        if not history:
            return cls(metrics_file=metrics_file)
        from fleetscan.history import HistoryRecorder

        return cls(recorder=HistoryRecorder(history), metrics_file=metrics_file)

    def begin(
        self, settings: ScanSettings, *, output: str | None, resume: ResumeState | None
    ) -> None:
        """Before the output is opened: the scan's row, and a resume's carried-over records."""
        recorder = self.recorder
        if recorder is None:
            return
        recorder.begin(
            instance_id=settings.instance_id,
            mode=settings.mode,
            output=None if output == "-" else output,
            resume=resume is not None,
        )
        self._begun = True
        if resume is not None and resume.carried_over:
            # What the interrupted run wrote but may not have committed: once more,
            # which changes nothing for what it did commit.
            log.info("history: recording the %d records carried over", resume.carried_over)
            recorder.import_file(resume.path)

    def sinks(self, *, on_error: Callable[[OSError], None] | None = None) -> list[Sink]:
        """The sinks to add to the scan's: the history's (its writes go to its thread).

        A history that fails mid-scan calls ``on_error`` (the scan's ``output_failed``)
        with a `fleetscan.history.HistoryWriteError`; `finish` and `close` then leave it.
        """
        if self.recorder is None:
            return []
        from fleetscan.history import HistorySink

        def failed(error: OSError) -> None:
            if on_error is None:
                raise error
            self._failed = True
            on_error(error)

        return [HistorySink(self.recorder, on_error=failed)]

    def finish(self, summary: ScanSummary) -> None:
        """At the end of the scan: commit the history, write the metrics file."""
        ids = None
        failure = None
        if self.recorder is not None and self._begun and not self._failed:
            from fleetscan.history import HistoryError

            try:
                row = self.recorder.end(summary)
            except HistoryError as exc:
                failure = exc
            else:
                # A resumed scan's whole counts, not only this run's.
                ids = {
                    "online": row.ids_online,
                    "offline": row.ids_offline,
                    "error": row.ids_error,
                    "invalid": row.ids_invalid,
                }
                log.info("history: scan %d recorded in %s", row.id, self.recorder.path)
        if self.metrics_file:
            from fleetscan.metrics import write_metrics

            write_metrics(self.metrics_file, summary, ids=ids)
        if failure is not None:
            raise failure

    def close(self) -> None:
        if self.recorder is None:
            return
        from fleetscan.history import HistoryError

        try:
            self.recorder.close()
        except HistoryError:
            if not self._failed:  # else already the scan's stop reason
                raise


# --- the commands ------------------------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``diff``, ``history`` and ``report`` to the ``fleetscan`` parser."""
    diff = commands.add_parser(
        "diff",
        help="what changed between two scan outputs",
        description="List each client ID whose status differs between two scan outputs "
        "(records in any order), one NDJSON record per ID; a summary on stderr.",
    )
    diff.add_argument("old", metavar="OLD", help="the earlier scan output (NDJSON)")
    diff.add_argument("new", metavar="NEW", help="the later scan output (NDJSON)")
    diff.add_argument("-o", "--output", metavar="FILE", help="destination (default stdout)")
    diff.add_argument("--summary", metavar="FILE", help="also write the summary as JSON")
    diff.add_argument("--quiet", action="store_true", help="no summary text on stderr")
    diff.set_defaults(handler=run_diff)

    history = commands.add_parser(
        "history",
        help="ask the scan history: offline devices, changes, groups, scans",
        description="Questions about the fleet's state between scans, from a history "
        "written by `fleetscan scan --history DB`.",
    )
    history.add_argument("db", metavar="DB", help="the history database")
    questions = history.add_subparsers(dest="question", required=True, metavar="QUESTION")
    offline = questions.add_parser(
        "offline",
        help="devices offline for at least a duration or a number of scans",
        description="Devices now offline; longest first.",
    )
    offline.add_argument(
        "--for",
        dest="at_least",
        type=parse_duration,
        metavar="DURATION",
        help="offline for at least this long, certainly (3d, 12h, 1d12h, 90m)",
    )
    offline.add_argument(
        "--scans", type=_positive_int, metavar="N", help="seen offline by at least N scans"
    )
    offline.add_argument("--group", help="only this group (GID_...)")
    offline.add_argument(
        "--at", type=_time, metavar="TIME", help="as of this time (default: the last scan's end)"
    )
    offline.add_argument("--limit", type=_positive_int, metavar="N")
    changes = questions.add_parser(
        "changes",
        help="what changed in the last scan, or in the scans between two times",
        description="Devices that went offline or came online, and devices seen for the "
        "first time: in the last scan, a given one, or the scans started in [--since, --until).",
    )
    which = changes.add_mutually_exclusive_group()
    which.add_argument("--scan", type=_positive_int, metavar="ID", help="this scan")
    which.add_argument("--since", type=_time, metavar="TIME", help="scans started at or after")
    changes.add_argument("--until", type=_time, metavar="TIME", help="scans started before")
    changes.add_argument("--limit", type=_positive_int, metavar="N")
    groups = questions.add_parser(
        "groups",
        help="per-group online share over the scans",
        description="Per scan and group: counts by status and the online share "
        "(online / (online + offline)).",
    )
    groups.add_argument(
        "--last", type=_positive_int, default=30, metavar="N", help="the N newest scans (30)"
    )
    groups.add_argument("--group", help="only this group")
    scans = questions.add_parser("scans", help="the scans recorded, newest first")
    scans.add_argument("--last", type=_positive_int, metavar="N", help="the N newest scans")
    for sub in (offline, changes, groups, scans):
        sub.add_argument(
            "--format",
            choices=("ndjson", "table"),
            default="ndjson",
            help="NDJSON records (default) or an aligned table",
        )
    history.set_defaults(handler=run_history)

    report = commands.add_parser(
        "report",
        help="the morning report: one self-contained HTML file from the history",
        description="Write one self-contained HTML file (no network, no external assets): "
        "the online share over the last scans, groups, newly and longest offline devices, "
        "and the last scan's cost.",
    )
    report.add_argument("--history", metavar="DB", required=True, help="the history database")
    report.add_argument("-o", "--output", metavar="FILE", required=True, help="the HTML file")
    report.add_argument(
        "--scans", type=_positive_int, default=30, metavar="N", help="scans in the chart (30)"
    )
    report.add_argument(
        "--top", type=_positive_int, default=50, metavar="N", help="rows per device list (50)"
    )
    report.set_defaults(handler=run_report)


def run_diff(args: argparse.Namespace) -> int:
    from fleetscan.diff import diff_files

    out: IO[bytes] = (
        open(args.output, "wb")  # noqa: SIM115 - closed below
        if args.output
        else sys.stdout.buffer
    )
    try:
        summary = diff_files(args.old, args.new, emit=out.write)
        out.flush()
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    if args.summary:
        with open(args.summary, "wb") as f:
            f.write(summary.to_json())
    if not args.quiet:
        sys.stderr.write(summary.to_text())
    return _EXIT_OK


def run_history(args: argparse.Namespace) -> int:
    from fleetscan.history import open_database, queries

    conn = open_database(args.db, create=False)
    try:
        rows: Iterable[dict[str, Any]]
        if args.question == "offline":
            if args.at_least is None and args.scans is None:
                log.info("no --for or --scans: every device now offline")
            rows = queries.offline(
                conn,
                at_least=args.at_least,
                scans=args.scans,
                group=args.group,
                at=args.at,
                limit=args.limit,
            )
        elif args.question == "changes":
            if args.since is not None or args.until is not None:
                ids = queries.scan_ids_between(conn, args.since, args.until)
            elif args.scan is not None:
                ids = [args.scan]
            else:
                last = queries.last_scan(conn)
                ids = [last.id] if last else []
            rows = queries.changes(conn, ids, limit=args.limit)
        elif args.question == "groups":
            rows = queries.group_shares(conn, last=args.last, group=args.group)
        else:
            rows = queries.scans(conn, last=args.last)
        _write_rows(rows, args.format, sys.stdout)
    finally:
        conn.close()
    return _EXIT_OK


def _write_rows(rows: Iterable[dict[str, Any]], fmt: str, stream: IO[str]) -> None:
    if fmt == "ndjson":
        out = stream.buffer if hasattr(stream, "buffer") else None
        for row in rows:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
            if out is not None:
                out.write(line)
            else:
                stream.write(line.decode())
        stream.flush()
        return
    stream.write(render_table(list(rows)))
    stream.flush()


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """An aligned text table (numbers right-aligned); empty input is one line."""
    if not rows:
        return "(no rows)\n"
    head = list(rows[0])
    cells = [["" if row[k] is None else str(row[k]) for k in head] for row in rows]
    numeric = [all(isinstance(row[k], int | float) or row[k] is None for row in rows) for k in head]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(head), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    return "\n".join(out) + "\n"


def run_report(args: argparse.Namespace) -> int:
    from fleetscan.history import open_database
    from fleetscan.report import gather, render_report

    conn = open_database(args.history, create=False)
    try:
        text = render_report(gather(conn, scans=args.scans, top=args.top))
    finally:
        conn.close()
    tmp = f"{args.output}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    log.info("report written to %s", args.output)
    return _EXIT_OK
