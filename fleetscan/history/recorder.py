"""Recording a scan into the history database, off the event loop.

::

    recorder = HistoryRecorder("fleet.db")              # opens and migrates, or raises
    recorder.begin(instance_id="mqtt-cn-x", mode="single", output="/data/tonight.ndjson")
    ...  scanner.run(ids, emit=lambda r: (writer.write(r), recorder.record(r)))
    row = recorder.end(summary)                         # waits for the last commit
    recorder.close()

`record` only appends to a list on the caller's thread; every `BATCH_SIZE` records
(or `HAND_OVER_SECONDS`) the list goes, through a bounded queue, to a thread of its
own that appends it to the ``pending`` table with one ``executemany`` in one
transaction: every answer is on disk about a second after it arrived. The queue
holds `QUEUE_BATCHES` batches; only if the disk cannot keep up with that many does
``record`` wait.

At `end`, the scan's pending answers are merged into ``devices`` in client ID order
(through an index built then), `MERGE_CHUNK` at a time, each chunk one transaction. Applied as
they came, in the scan's order, each answer rewrote a random page of a table of
gigabytes (10 million updates: 4.3 million in 13 minutes, on a loaded machine); in
key order each page is written once. The SQL does the state machine itself (an
upsert whose ``SET`` reads the old row; a trigger writes the transitions). So
``devices`` shows a scan once it ended; ``pending`` holds what a scan that has not
ended answered so far, and the next `begin` merges what a dead one left.

A resumed scan (``scan --resume -o FILE``) is the same scan: `begin` with
``resume=True`` continues the newest scan row written to the same output file (by
real path): ``--resume`` only ever continues the file, and a new scan into that file
(without ``--resume``) replaces it and gets a row of its own. `import_file` records
the file's carried-over records again. Applying a record twice changes nothing: an
answer counts only when it is newer than the device's last one, so what the
interrupted run committed and what it had only written to the file both end up
recorded exactly once.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from fleetscan.history.schema import HistoryError, open_database
from fleetscan.ids import group_of
from fleetscan.records import Record, rfc3339
from fleetscan.summary import ScanSummary

__all__ = [
    "BATCH_SIZE",
    "HAND_OVER_SECONDS",
    "MERGE_CHUNK",
    "QUEUE_BATCHES",
    "HistoryRecorder",
    "HistorySink",
    "HistoryWriteError",
    "ScanRow",
    "merge_pending",
    "stage_answers",
]

# Records per executemany and transaction ...
BATCH_SIZE = 10_000
# ... or what arrived in this many seconds, whichever is first: at a scan's pace the
# history trails the output file by about a second.
HAND_OVER_SECONDS = 1.0
# Batches waiting for the writer thread before `record` blocks.
QUEUE_BATCHES = 32
# Answers per transaction when merging pending answers into the devices.
MERGE_CHUNK = 50_000

# One answer as the recorder keeps it: (client_id, status, checked_at). The time is
# formatted on the writer thread (a datetime from a scan, text from a file).
Answer = tuple[str, str, datetime | str]

_DEFINITE = frozenset({"online", "offline"})

# The state machine (see schema.py). In an upsert's SET, a bare column is the old row.
_UPSERT = """
INSERT INTO devices (client_id, grp, state, since_low, since_low_scan, since_high,
    since_high_scan, state_scans, seen_at, seen_scan, last_online_at, last_status,
    last_checked_at, last_scan_id, first_scan_id)
VALUES (?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (client_id) DO UPDATE SET
    since_low = CASE WHEN excluded.state IS NOT NULL AND excluded.state IS NOT state
        THEN seen_at ELSE since_low END,
    since_low_scan = CASE WHEN excluded.state IS NOT NULL AND excluded.state IS NOT state
        THEN seen_scan ELSE since_low_scan END,
    since_high = CASE WHEN excluded.state IS NOT NULL AND excluded.state IS NOT state
        THEN excluded.since_high ELSE since_high END,
    since_high_scan = CASE WHEN excluded.state IS NOT NULL AND excluded.state IS NOT state
        THEN excluded.since_high_scan ELSE since_high_scan END,
    state_scans = CASE
        WHEN excluded.state IS NOT NULL AND excluded.state IS NOT state THEN 1
        WHEN excluded.state IS NOT NULL AND seen_scan IS NOT excluded.seen_scan
            THEN state_scans + 1
        ELSE state_scans END,
    state = coalesce(excluded.state, state),
    seen_at = coalesce(excluded.seen_at, seen_at),
    seen_scan = coalesce(excluded.seen_scan, seen_scan),
    last_online_at = coalesce(excluded.last_online_at, last_online_at),
    last_status = excluded.last_status,
    last_checked_at = excluded.last_checked_at,
    last_scan_id = excluded.last_scan_id
WHERE excluded.last_checked_at > last_checked_at
"""


def _row(staged: tuple[str, str, str, str], scan_id: int) -> tuple[Any, ...]:
    client_id, grp, status, at = staged
    definite = status in _DEFINITE
    return (
        client_id,
        grp,
        status if definite else None,  # state
        at if definite else None,  # since_high
        scan_id if definite else None,  # since_high_scan
        1 if definite else 0,  # state_scans
        at if definite else None,  # seen_at
        scan_id if definite else None,  # seen_scan
        at if status == "online" else None,  # last_online_at
        status,
        at,
        scan_id,
        scan_id,  # first_scan_id, kept by the update
    )


def stage_answers(conn: sqlite3.Connection, scan_id: int, answers: Iterable[Answer]) -> None:
    """Append answers of scan ``scan_id`` to ``pending`` in one transaction."""
    rows = (
        (scan_id, cid, group_of(cid), status, when if isinstance(when, str) else rfc3339(when))
        for cid, status, when in answers
    )
    conn.execute("BEGIN")
    try:
        conn.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?)", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# Reads the next chunk of a scan's pending answers, in key order, after the last one
# applied; the index (covering) makes each chunk a short, sequential read.
_NEXT_CHUNK = """
SELECT client_id, grp, status, checked_at FROM pending INDEXED BY pending_order
WHERE scan_id = ? AND (client_id, checked_at) > (?, ?)
ORDER BY client_id, checked_at LIMIT ?
"""


def merge_pending(conn: sqlite3.Connection, scan_id: int, *, chunk: int = MERGE_CHUNK) -> int:
    """Apply scan ``scan_id``'s pending answers to the devices, in client ID then time
    order, ``chunk`` per transaction; then drop them. Returns the answers applied.

    Each chunk is read afresh after the last key applied, so no read stays open across
    commits and the WAL is checkpointed as it goes (one long read would keep every
    page written until its end). A crash in between leaves the answers pending:
    merging again is harmless, since an answer applies only when it is newer than the
    device's last one (which also makes skipping exact repeats at a chunk's edge safe).
    """
    conn.execute(
        "CREATE INDEX IF NOT EXISTS pending_order "
        "ON pending (scan_id, client_id, checked_at, status, grp)"
    )
    after = ("", "")
    applied = 0
    while staged := conn.execute(_NEXT_CHUNK, (scan_id, *after, chunk)).fetchall():
        conn.execute("BEGIN")
        try:
            conn.executemany(_UPSERT, (_row(row, scan_id) for row in staged))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        after = (staged[-1][0], staged[-1][3])
        applied += len(staged)
    others = conn.execute(
        "SELECT 1 FROM pending INDEXED BY pending_order WHERE scan_id < ? OR scan_id > ? LIMIT 1",
        (scan_id, scan_id),
    ).fetchone()
    if others is None:
        # The usual case: only this scan was pending. Dropping the index and deleting
        # without a WHERE frees whole pages at once; a row-by-row delete of ten
        # million answers wrote them all to the WAL again.
        conn.execute("DROP INDEX pending_order")
        conn.execute("DELETE FROM pending")
    else:
        conn.execute("DELETE FROM pending WHERE scan_id = ?", (scan_id,))
    return applied


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanRow:
    """A scan as the history database holds it."""

    id: int
    started_at: str
    ended_at: str | None
    instance_id: str
    mode: str
    output: str | None
    outcome: str | None
    runs: int
    ids_online: int
    ids_offline: int
    ids_error: int
    ids_invalid: int
    calls_sent: int
    calls_throttled: int
    calls_failed: int
    billable_transactions: int
    duration_seconds: float
    peak_tps: int

    @classmethod
    def load(cls, conn: sqlite3.Connection, scan_id: int) -> ScanRow:
        conn.row_factory = sqlite3.Row
        try:
            sql = f"SELECT {_SCAN_COLUMNS} FROM scans WHERE id = ?"
            row = conn.execute(sql, (scan_id,))
            found = row.fetchone()
        finally:
            conn.row_factory = None
        if found is None:
            raise HistoryError(f"no scan {scan_id} in the history")
        return cls(**dict(found))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


_SCAN_COLUMNS = ", ".join(ScanRow.__dataclass_fields__)


class HistoryRecorder:
    """Records one scan's answers into a history database from a thread of its own."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = BATCH_SIZE,
        queue_batches: int = QUEUE_BATCHES,
        hand_over_seconds: float = HAND_OVER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        # Open and migrate here, so a bad file is an error before the scan begins.
        open_database(self.path).close()
        self._batch_size = batch_size
        self._hand_over_seconds = hand_over_seconds
        self._clock = clock
        # When the pending list was last handed over (clock seconds).
        self._handed_at = clock()
        # Answers not yet handed to the writer thread.
        self._pending: list[Answer] = []
        # Commands for the writer thread: ("begin"|"answers"|"end", payload), None to stop.
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=queue_batches)
        # What the writer thread sends back: the scan row after "end".
        self._done: queue.Queue[ScanRow | BaseException] = queue.Queue()
        # Set by the writer thread when it dies; raised (or reported) on the caller's side.
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fleetscan-history", daemon=True)
        self._thread.start()
        self._begun = False
        self._closed = False

    # --- the caller's side ---------------------------------------------------------------

    def begin(
        self,
        *,
        instance_id: str,
        mode: str,
        output: str | None,
        resume: bool = False,
        started_at: datetime | None = None,
    ) -> None:
        """Start recording a scan (a new row, or the resumed scan's row)."""
        real = os.path.realpath(output) if output else None
        when = rfc3339(started_at or datetime.now(UTC))
        self._put(("begin", (instance_id, mode, real, resume, when)))
        self._begun = True

    def record(self, record: Record) -> None:
        """Queue one record (cheap: called on the event loop for every record)."""
        self._pending.append((record.client_id, record.status.value, record.checked_at))
        if (
            len(self._pending) >= self._batch_size
            or self._clock() - self._handed_at >= self._hand_over_seconds
        ):
            self._hand_over()

    def import_file(self, path: str | os.PathLike[str]) -> int:
        """Record the final records already in a scan output (a resume's carried-over part)."""
        count = 0
        with open(path, "rb", buffering=1024 * 1024) as f:
            for raw in f:
                if not raw.strip():
                    continue
                data = orjson.loads(raw)
                status = data.get("status")
                if status in ("online", "offline", "invalid") and isinstance(
                    data.get("checked_at"), str
                ):
                    self._pending.append((data["client_id"], status, data["checked_at"]))
                    count += 1
                    if len(self._pending) >= self._batch_size:
                        self._hand_over()
        return count

    def end(self, summary: ScanSummary) -> ScanRow:
        """Record the summary, wait until everything is committed, return the scan row."""
        if not self._begun:
            raise HistoryError("end() before begin()")
        self._hand_over()
        self._put(("end", summary))
        result = self._done.get()
        if isinstance(result, BaseException):
            raise HistoryError(f"{self.path}: recording the scan failed: {result}") from None
        return result

    def close(self) -> None:
        """Stop the writer thread (after what was queued); raise if it had failed."""
        if self._closed:
            return
        self._closed = True
        if self._failure is None:
            self._queue.put(None)
        self._thread.join()
        if self._failure is not None:
            raise HistoryError(f"{self.path}: recording the scan failed: {self._failure}")

    def hand_over(self) -> None:
        """Give the records queued so far to the writer thread now."""
        self._hand_over()

    @property
    def failure(self) -> BaseException | None:
        """Why the writer thread stopped (a disk error, the database locked past its
        timeout or changed under it), or None while it works."""
        return self._failure

    def _hand_over(self) -> None:
        self._handed_at = self._clock()
        if self._pending:
            batch, self._pending = self._pending, []
            self._put(("answers", batch))

    def _put(self, item: tuple[str, Any]) -> None:
        # A full queue waits for the writer; a dead writer must not hang the scan.
        while True:
            if self._failure is not None:
                raise HistoryError(f"{self.path}: recording the scan failed: {self._failure}")
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # --- the writer thread ---------------------------------------------------------------

    def _work(self) -> None:
        conn: sqlite3.Connection | None = None
        scan_id: int | None = None
        try:
            conn = open_database(self.path)
            while (item := self._queue.get()) is not None:
                kind, payload = item
                if kind == "begin":
                    scan_id = _begin_scan(conn, *payload)
                elif kind == "answers":
                    assert scan_id is not None
                    stage_answers(conn, scan_id, payload)
                elif kind == "end":
                    assert scan_id is not None
                    self._done.put(_end_scan(conn, scan_id, payload))
        except BaseException as exc:  # reported to the caller by the next call
            self._failure = exc
            self._done.put(exc)
        finally:
            if conn is not None:
                conn.close()


class HistoryWriteError(OSError):
    """The history could not be written mid-scan: its writer thread failed (``cause``:
    a disk error, the database locked past its timeout, changed or corrupted under the
    scan). An ``OSError`` (``filename``: the database), so the scan stops as for an
    output it cannot write: nothing more is sent, exit 4, the summary written."""

    def __init__(self, path: str, cause: BaseException) -> None:
        why = str(cause) or type(cause).__name__
        super().__init__(cause.errno if isinstance(cause, OSError) else None, why, path)
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.filename}: recording the scan failed: {self.strerror}"

    def describe(self, output: str | None) -> str:
        """One line for the user: what failed, and what finishes the scan."""
        where = "stdout" if output in (None, "-") else output
        return (
            f"cannot record the scan in the history {self.filename}: {self.strerror}; "
            f"nothing more was sent, and the records so far are in {where}: once the "
            f"history works again, --resume -o FILE --history {self.filename} finishes "
            "the scan"
        )


class HistorySink:
    """A `HistoryRecorder` as one of a scan's sinks (`fleetscan.sink.Sink`).

    ``write`` only appends to the recorder's list; the SQLite work stays on the
    recorder's thread, off the event loop. ``close`` hands the last records over but
    leaves the recorder open: `HistoryRecorder.end` follows with the scan's summary.

    When the writer thread dies, the sink does what `fleetscan.output.RecordWriter`
    does for a write error: it keeps a `HistoryWriteError` in ``failure``, tells
    ``on_error`` once (the scan stops sending; the other sinks still get every record)
    and takes no more records. ``flush``, called every 100 ms, looks for the failure
    even when there is nothing to hand over. Without ``on_error`` it raises.
    """

    __slots__ = ("_on_error", "failure", "recorder")

    def __init__(
        self,
        recorder: HistoryRecorder,
        *,
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self._on_error = on_error
        self.failure: HistoryWriteError | None = None

    def write(self, record: Record) -> None:
        if self.failure is None:
            self._guard(lambda: self.recorder.record(record))

    def flush(self, *, fsync: bool = False) -> None:
        if self.failure is None:
            self._guard(self.recorder.hand_over)

    def close(self) -> None:
        self.flush()

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except HistoryError:
            if self.recorder.failure is None:
                raise
            # Else the thread's failure: said once, below.
        cause = self.recorder.failure
        if cause is None:
            return
        self.failure = HistoryWriteError(self.recorder.path, cause)
        if self._on_error is None:
            raise self.failure
        self._on_error(self.failure)


def _begin_scan(
    conn: sqlite3.Connection,
    instance_id: str,
    mode: str,
    output: str | None,
    resume: bool,
    started_at: str,
) -> int:
    continued: int | None = None
    if resume and output is not None:
        found = conn.execute(
            "SELECT id FROM scans WHERE output = ? ORDER BY id DESC LIMIT 1", (output,)
        ).fetchone()
        continued = int(found[0]) if found is not None else None
    # What a scan that died (and is not the one resumed here) answered still counts,
    # before anything newer.
    left_over = conn.execute("SELECT DISTINCT scan_id FROM pending ORDER BY 1").fetchall()
    for (scan_id,) in left_over:
        if scan_id != continued:
            merge_pending(conn, scan_id)
            _count_scan(conn, scan_id)
    if continued is not None:
        conn.execute("UPDATE scans SET runs = runs + 1 WHERE id = ?", (continued,))
        return continued
    cursor = conn.execute(
        "INSERT INTO scans (started_at, instance_id, mode, output) VALUES (?, ?, ?, ?)",
        (started_at, instance_id, mode, output),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _count_scan(conn: sqlite3.Connection, scan_id: int) -> None:
    """The scan's counts, in total and per group, from the devices it answered last:
    a resumed scan's earlier runs included, each ID once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM scan_groups WHERE scan_id = ?", (scan_id,))
        conn.execute(
            """
            INSERT INTO scan_groups
            SELECT last_scan_id, grp,
                   sum(last_status = 'online'), sum(last_status = 'offline'),
                   sum(last_status = 'error'), sum(last_status = 'invalid')
            FROM devices WHERE last_scan_id = ? GROUP BY grp
            """,
            (scan_id,),
        )
        totals = "SELECT coalesce(sum({0}), 0) FROM scan_groups WHERE scan_id = :id"
        conn.execute(
            f"""
            UPDATE scans SET
                ids_online = ({totals.format("online")}),
                ids_offline = ({totals.format("offline")}),
                ids_error = ({totals.format("error")}),
                ids_invalid = ({totals.format("invalid")})
            WHERE id = :id
            """,
            {"id": scan_id},
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _end_scan(conn: sqlite3.Connection, scan_id: int, summary: ScanSummary) -> ScanRow:
    merge_pending(conn, scan_id)
    _count_scan(conn, scan_id)
    conn.execute(
        """
        UPDATE scans SET
            ended_at = ?, outcome = ?,
            calls_sent = calls_sent + ?, calls_throttled = calls_throttled + ?,
            calls_failed = calls_failed + ?,
            billable_transactions = billable_transactions + ?,
            duration_seconds = duration_seconds + ?, peak_tps = max(peak_tps, ?)
        WHERE id = ?
        """,
        (
            rfc3339(summary.ended_at),
            summary.outcome,
            summary.calls_sent,
            summary.calls_throttled,
            summary.calls_failed,
            summary.billable_transactions,
            summary.duration_seconds,
            summary.peak_tps,
            scan_id,
        ),
    )
    return ScanRow.load(conn, scan_id)
