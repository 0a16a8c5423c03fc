"""NDJSON output that survives crashes, and resuming from it.

``RecordWriter`` buffers complete lines and hands them to the stream in one write,
so the file only ever ends mid-line when the process dies during that write (or
the machine loses power and leaves a zero-filled tail). ``prepare_resume`` repairs
exactly that: it cuts a torn last line away, keeps the first final record
(``online``, ``offline``, ``invalid``) of each client ID, drops ``error`` records so
those IDs are asked again, and returns the IDs already done as a ``SeenSet``.
Anything else that is not a record (a bad line in the middle, a file that is not
fleetscan output) is an ``InputError``: data is never dropped silently.
``count_records`` reads a scan output the same way, only to count its records by
status (the estimate's offline share), and changes nothing.

Usage::

    state = prepare_resume(path)          # before opening the file for appending
    with open(path, "ab") as out:
        writer = RecordWriter(out)
        for record in results:            # skip IDs for which state.seen.add() is False
            writer.write(record)
        writer.flush(fsync=True)
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO

import orjson

from fleetscan.dedup import SeenSet
from fleetscan.destination import fsync_directory, mkstemp_whole
from fleetscan.errors import InputError
from fleetscan.records import Record, Status

__all__ = [
    "FLUSH_BYTES",
    "FLUSH_INTERVAL",
    "MAX_RECORD_BYTES",
    "RecordCounts",
    "RecordWriter",
    "ResumeState",
    "count_records",
    "prepare_resume",
]

# The writer hands its buffer to the stream when it is this old (seconds) ...
FLUSH_INTERVAL = 0.1
# ... or this large (bytes), whichever comes first.
FLUSH_BYTES = 256 * 1024

# A line of an output file longer than this is not a fleetscan record.
MAX_RECORD_BYTES = 1024 * 1024

# Keep at most this many distinct instance IDs from a resumed file (to warn on).
_MAX_INSTANCE_IDS = 8

_FINAL = {s.value: s for s in (Status.ONLINE, Status.OFFLINE, Status.INVALID)}


class RecordWriter:
    """NDJSON records onto a binary stream, in whole lines, flushed often.

    ``write`` flushes by itself once the buffer is ``flush_interval`` seconds old or
    ``flush_bytes`` large; the caller still calls ``flush`` when it goes idle and at
    the end, so the last records are not left waiting in memory.

    A write error (a closed pipe, a full disk, EIO) is not raised into the caller,
    which may be any worker of the scan: the writer keeps the error in ``failure``,
    tells ``on_error`` once (the scan stops sending), and from then on counts the
    records it can no longer write in ``lost`` instead of writing them. Without
    ``on_error`` the first error is raised (after being kept the same way).
    """

    def __init__(
        self,
        stream: BinaryIO | IO[bytes],
        *,
        flush_interval: float = FLUSH_INTERVAL,
        flush_bytes: int = FLUSH_BYTES,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self._stream = stream
        self._on_error = on_error
        self.failure: OSError | None = None
        # Records given to write() that never reached the stream whole.
        self.lost = 0
        self._flush_interval = flush_interval
        self._flush_bytes = flush_bytes
        self._clock = clock
        # Complete NDJSON lines not yet handed to the stream.
        self._buffer = bytearray()
        # Records in ``_buffer``, and records handed to the stream so far.
        self._pending = 0
        self._written = 0
        # Records handed to the stream but not flushed through it yet.
        self._in_stream = 0
        # When the buffer last went from empty to non-empty (clock seconds).
        self._oldest = 0.0

    @property
    def written(self) -> int:
        """Records handed to the stream (and flushed) so far."""
        return self._written

    @property
    def pending(self) -> int:
        """Records buffered, not yet written."""
        return self._pending

    def write(self, record: Record) -> None:
        if self.failure is not None:
            self.lost += 1
            return
        now = self._clock()
        if not self._buffer:
            self._oldest = now
        self._buffer += record.to_json()
        self._pending += 1
        if len(self._buffer) >= self._flush_bytes or now - self._oldest >= self._flush_interval:
            self.flush()

    def flush(self, *, fsync: bool = False) -> None:
        """Write the buffered lines in one piece and flush the stream.

        ``fsync`` also asks the OS to put a regular file on disk (ignored for pipes).
        """
        if self.failure is not None:
            return
        try:
            self._flush(fsync=fsync)
        except OSError as exc:
            self.failure = exc
            self.lost += self._pending + self._in_stream
            self._pending = self._in_stream = 0
            self._buffer.clear()
            if self._on_error is None:
                raise
            self._on_error(exc)

    def _flush(self, *, fsync: bool) -> None:
        if self._buffer:
            # Taken out first: after a failed write, nothing is written twice.
            view = memoryview(bytes(self._buffer))
            self._in_stream += self._pending
            self._pending = 0
            self._buffer.clear()
            while view:
                # A buffered stream writes all of it; a raw one may write part.
                view = view[self._stream.write(view) :]
        self._stream.flush()
        self._written += self._in_stream
        self._in_stream = 0
        if fsync:
            _fsync_if_file(self._stream)

    def close(self) -> None:
        """The last call (after ``flush(fsync=True)``): hand on what is left. The
        stream stays open: it is the caller's, who may have more to write to it."""
        self.flush()


def _fsync_if_file(stream: BinaryIO | IO[bytes]) -> None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fsync(fd)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeState:
    """What an earlier run left in the output file, after repair.

    ``seen`` holds every client ID with a final record: seed the scan's dedup with
    it. ``online``/``offline``/``invalid`` count those records; ``dropped_errors``
    and ``dropped_duplicates`` count lines removed by the rewrite, ``torn_bytes``
    the bytes of a torn last line cut away.
    """

    path: str
    seen: SeenSet = field(compare=False)
    online: int = 0
    offline: int = 0
    invalid: int = 0
    dropped_errors: int = 0
    dropped_duplicates: int = 0
    torn_bytes: int = 0
    rewritten: bool = False
    instance_ids: frozenset[str] = frozenset()

    @property
    def repairs(self) -> tuple[str, ...]:
        """What the repair changed in the file, for the user (empty when nothing)."""
        notes = []
        if self.torn_bytes:
            notes.append(
                f"resume: cut a torn last line ({self.torn_bytes} bytes) from {self.path}; "
                "its ID is asked again"
            )
        if self.dropped_errors:
            notes.append(
                f"resume: dropped {self.dropped_errors} error records from {self.path}; "
                "those IDs are asked again"
            )
        if self.dropped_duplicates:
            notes.append(
                f"resume: dropped {self.dropped_duplicates} duplicate records from {self.path}"
            )
        return tuple(notes)

    @property
    def carried_over(self) -> int:
        """Client IDs already done: the scan will not ask about them again."""
        return self.online + self.offline + self.invalid

    def final_ids(self) -> Iterator[str]:
        """The client IDs of the repaired file, read again from it, one at a time.

        ``seen`` already holds them all: use that as the scan's dedup set rather than
        copying these into a second one. Call this before appending to the file.
        """
        try:
            f = open(self.path, "rb", buffering=1024 * 1024)  # noqa: SIM115
        except FileNotFoundError:
            return
        with f:
            for raw in f:
                if raw.strip():
                    record = orjson.loads(raw)
                    if record["status"] in _FINAL:
                        yield record["client_id"]


def prepare_resume(
    path: str | os.PathLike[str],
    *,
    instance_id: str | None = None,
    owns: Callable[[str], bool] | None = None,
) -> ResumeState:
    """Repair the output file at ``path`` for appending and return what it holds.

    A missing or empty file is a fresh start. The file is read once; only when it
    holds ``error`` records or duplicates is it read again and rewritten through a
    temporary file in the same directory (fsync, then ``os.replace``), so a crash
    during the rewrite leaves the old file whole. Memory is the ``SeenSet`` only.

    With ``instance_id``, a record of any other instance is an ``InputError`` (found
    before anything is changed): one file never mixes two instances. With ``owns`` (a
    shard's `fleetscan.shard.Shard.owns`), so is a record of an ID the shard does not
    own: the file was written by another shard or seed. Only a regular
    file can be resumed: a pipe (``/dev/stdout``) would be read from its own output.
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise InputError("is a directory, not an output file", source=name)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.stat(name).st_mode):
            raise InputError(
                "not a regular file (a pipe, a terminal or a device): resume reads the "
                "file back, so it works on a regular -o FILE only",
                source=name,
            )
    try:
        source = open(name, "rb", buffering=1024 * 1024)  # noqa: SIM115
    except FileNotFoundError:
        return ResumeState(path=name, seen=SeenSet())
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from None
    with source:
        scan = _Scan(name, out=None, instance_id=instance_id, owns=owns)
        scan.run(source, stop_at_rewrite=instance_id is None and owns is None)
    if scan.needs_rewrite:
        del scan  # free the first pass's SeenSet before the second fills another
        scan = _rewrite(name, instance_id, owns)
    elif scan.torn_bytes:
        _truncate(name, scan.good_bytes)
    return ResumeState(
        path=name,
        seen=scan.seen,
        online=scan.counts[Status.ONLINE],
        offline=scan.counts[Status.OFFLINE],
        invalid=scan.counts[Status.INVALID],
        dropped_errors=scan.errors,
        dropped_duplicates=scan.duplicates,
        torn_bytes=scan.torn_bytes,
        rewritten=scan.out is not None,
        instance_ids=frozenset(scan.instance_ids),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordCounts:
    """The records of a scan output by status (`count_records`); the file is unchanged.

    ``confirmed_online`` counts the online records a batch answer had said were
    offline (``confirmed: true``, --confirm-offline): with ``offline``, the IDs the
    batch found offline.
    """

    path: str
    online: int = 0
    offline: int = 0
    invalid: int = 0
    errors: int = 0
    confirmed_online: int = 0


def count_records(path: str | os.PathLike[str]) -> RecordCounts:
    """Count the records of the scan output at ``path``, read once, streaming, in
    constant memory (it may hold tens of millions); nothing is written.

    The checks are `prepare_resume`'s: a torn last line (a scan that died mid-write) is
    left uncounted, any other line that is not a record is an ``InputError`` naming the
    file and line. Every record counts, a repeated ID each time (a file
    `prepare_resume` repaired holds none).
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise InputError("is a directory, not a scan output", source=name)
    try:
        source = open(name, "rb", buffering=1024 * 1024)  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from None
    with source:
        scan = _Scan(name, out=None, instance_id=None, dedup=False)
        scan.run(source)
    return RecordCounts(
        path=name,
        online=scan.counts[Status.ONLINE],
        offline=scan.counts[Status.OFFLINE],
        invalid=scan.counts[Status.INVALID],
        errors=scan.errors,
        confirmed_online=scan.confirmed_online,
    )


class _Scan:
    """One pass over an output file: checks each line, counts, optionally copies."""

    def __init__(
        self,
        source: str,
        out: IO[bytes] | None,
        instance_id: str | None,
        owns: Callable[[str], bool] | None = None,
        *,
        dedup: bool = True,
    ) -> None:
        self.source = source
        # The instance every record must name (None: any).
        self.instance_id = instance_id
        # The shard every record's ID must belong to (None: any).
        self.owns = owns
        # Where kept lines go during a rewrite; None on the read-only first pass.
        self.out = out
        self.seen = SeenSet()
        # Without dedup (counting only) ``seen`` stays empty: no memory per ID.
        self.dedup = dedup
        self.counts = dict.fromkeys(_FINAL.values(), 0)
        self.confirmed_online = 0
        self.errors = 0
        self.duplicates = 0
        self.instance_ids: set[str] = set()
        # Bytes up to the end of the last line worth keeping; the rest is torn.
        self.good_bytes = 0
        self.torn_bytes = 0
        self.needs_rewrite = False

    def run(self, f: IO[bytes], *, stop_at_rewrite: bool = False) -> None:
        offset = 0
        number = 0
        # (line number, start offset, reason) of an unreadable line: allowed only last.
        suspect: tuple[int, int, str] | None = None
        while raw := f.readline(MAX_RECORD_BYTES + 1):
            number += 1
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_RECORD_BYTES:
                    tail, at_eof = _rest_of_line(f)
                    offset += tail
                    if at_eof and _looks_torn(raw):
                        suspect = suspect or (number, start, "torn")
                        break
                    raise self._error(f"line longer than {MAX_RECORD_BYTES} bytes", number)
                # No newline: the end of the file, cut off mid-write.
                if _looks_torn(raw):
                    suspect = suspect or (number, start, "torn")
                    break
                raise self._not_output(number)
            if not raw.strip():
                if self.out is None and suspect is None:
                    self.good_bytes = offset
                continue
            if suspect is not None:
                raise self._error(f"unreadable record: {suspect[2]}", suspect[0])
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if not _looks_torn(raw):
                    raise self._not_output(number) from None
                suspect = (number, start, str(exc))
                continue
            self._take(record, raw, number)
            self.good_bytes = offset
            if self.needs_rewrite and stop_at_rewrite:
                return
        if suspect is not None:
            self.torn_bytes = offset - suspect[1]
            self.good_bytes = suspect[1]

    def _take(self, record: object, raw: bytes, number: int) -> None:
        if not isinstance(record, dict):
            raise self._not_output(number)
        client_id = record.get("client_id")
        status = record.get("status")
        if not isinstance(client_id, str) or not isinstance(status, str):
            raise self._error("a record needs a client_id and a status", number)
        instance_id = record.get("instance_id")
        if self.instance_id is not None and instance_id != self.instance_id:
            raise self._error(
                f"this file holds records of instance {instance_id!r}, and this scan is of "
                f"{self.instance_id!r}: resuming would mix two instances in one file; give "
                "the right --instance-id, or another -o FILE",
                number,
            )
        if self.owns is not None and not self.owns(client_id):
            raise self._error(
                f"this file holds {client_id!r}, which this scan's shard does not own: it "
                "was written by another --shard or --shard-seed (or without --shard); "
                "resume it with the ones it was written with, or give another -o FILE",
                number,
            )
        final = _FINAL.get(status)
        if final is None:
            if status != Status.ERROR.value:
                raise self._error(f"unknown status {status!r}", number)
            self.errors += 1
            self.needs_rewrite = True
            return
        if self.dedup and not self.seen.add(client_id):
            self.duplicates += 1
            self.needs_rewrite = True
            return
        self.counts[final] += 1
        if final is Status.ONLINE and record.get("confirmed") is True:
            self.confirmed_online += 1
        if isinstance(instance_id, str) and len(self.instance_ids) < _MAX_INSTANCE_IDS:
            self.instance_ids.add(instance_id)
        if self.out is not None:
            self.out.write(raw)

    def _error(self, message: str, number: int) -> InputError:
        return InputError(message, source=self.source, line=number)

    def _not_output(self, number: int) -> InputError:
        return self._error("not a fleetscan NDJSON record: is this the right output file?", number)


def _looks_torn(raw: bytes) -> bool:
    # What a crash leaves: the start of a record line, or a zero-filled tail.
    return raw.startswith(b"{") or not raw.strip(b"\0\r\n")


def _rest_of_line(f: IO[bytes]) -> tuple[int, bool]:
    """Skip to the end of an over-long line: (bytes skipped, reached EOF with no newline)."""
    skipped = 0
    while chunk := f.readline(MAX_RECORD_BYTES):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            return skipped, False
    return skipped, True


def _rewrite(name: str, instance_id: str | None, owns: Callable[[str], bool] | None) -> _Scan:
    directory = os.path.dirname(os.path.abspath(name))
    mode = stat.S_IMODE(os.stat(name).st_mode)
    fd, tmp_name = mkstemp_whole(name, ".resume")
    try:
        with open(fd, "wb") as tmp, open(name, "rb", buffering=1024 * 1024) as source:
            scan = _Scan(name, out=tmp, instance_id=instance_id, owns=owns)
            scan.run(source)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, name)
    except BaseException:  # a signal too: no hidden file left behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_directory(directory)
    return scan


def _truncate(name: str, size: int) -> None:
    with open(name, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
