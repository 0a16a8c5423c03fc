"""Client IDs read lazily from files and stdin, one ``InputRow`` at a time.

The format comes from the file name: ``.csv`` (and ``.tsv``) have a header row and
the ID in one column; anything else is plain text, one ID a line; ``.gz`` may wrap
either. Stdin (``-``, or no sources at all) is plain text unless ``stdin_format``
says ``csv`` or a ``column`` is named. Stdin is read a line at a time as lines
arrive, so a producer that keeps the pipe open still gets each ID scanned.

Only a malformed *file* raises ``InputError`` (with source and line): bytes that are
not UTF-8, NUL bytes, a line over ``MAX_LINE_BYTES``, a CSV without the column (or
without a header row: a first row that is a client ID).
An ID that merely is not a valid client ID (spaces inside, too long, ``/``) is
yielded as is: validation downstream turns it into an ``invalid`` record, so every
input line is accounted for in the output. Each ID is stripped of surrounding
whitespace; blank lines are skipped; IDs are case-sensitive.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol

from fleetscan.errors import InputError
from fleetscan.ids import client_id_problem

__all__ = [
    "ID_COLUMNS",
    "MAX_LINE_BYTES",
    "STDIN",
    "InputRow",
    "StdinFormat",
    "read_client_ids",
]

# A line longer than this is an error, read no further than the limit: client IDs
# are at most 64 characters, so 64 KiB leaves room for wide CSV rows.
MAX_LINE_BYTES = 64 * 1024

# Column names taken as the ID column of a CSV when no ``column`` is named.
ID_COLUMNS = ("client_id", "ClientId", "clientId")

# The source name that means standard input.
STDIN = "-"

StdinFormat = Literal["text", "csv"]

_BOM = "\ufeff"
_GZIP_MAGIC = b"\x1f\x8b"


class _Readable(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRow:
    """One client ID and where it came from (``line`` is 1-based, physical)."""

    source: str
    line: int
    client_id: str


def read_client_ids(
    sources: Sequence[str],
    *,
    column: str | None = None,
    stdin: BinaryIO | None = None,
    stdin_format: StdinFormat | None = None,
    encoding: str = "utf-8",
) -> Iterator[InputRow]:
    """Yield the client ID of every non-blank line or row of ``sources``, in order.

    ``column`` names the CSV column holding the IDs (default: the first of
    ``ID_COLUMNS`` present, else the first column); plain-text files ignore it.
    ``stdin`` defaults to ``sys.stdin.buffer``. Every source must exist before any
    is read: a missing file raises ``InputError`` here, not half-way through.
    ``encoding`` is the text encoding of every source (an unknown one is refused here).
    """
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown --encoding {encoding!r}", source="--encoding") from None
    names = list(sources) or [STDIN]
    for name in names:
        if name != STDIN:
            _check_readable(name)
    fmt: StdinFormat = stdin_format or ("csv" if column is not None else "text")
    return _rows(names, column, stdin, fmt, encoding)


def _rows(
    names: list[str],
    column: str | None,
    stdin: BinaryIO | None,
    stdin_format: StdinFormat,
    encoding: str,
) -> Iterator[InputRow]:
    for name in names:
        if name == STDIN:
            stream = stdin if stdin is not None else sys.stdin.buffer
            yield from _read_stream(
                stream, "<stdin>", stdin_format == "csv", ",", column, encoding, stdin=True
            )
            continue
        lower = name.lower()
        gz = lower.endswith(".gz")
        base = lower[:-3] if gz else lower
        delimiter = "\t" if base.endswith(".tsv") else ","
        is_csv = base.endswith((".csv", ".tsv"))
        try:
            # Binary and buffered: readline(limit) never reads more than it must.
            opened = gzip.open(name, "rb") if gz else open(name, "rb")  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from None
        with opened:
            yield from _read_stream(opened, name, is_csv, delimiter, column, encoding)


def _check_readable(name: str) -> None:
    try:
        if os.path.isdir(name):
            raise InputError("is a directory, not a file of client IDs", source=name)
        with open(name, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from None


def _read_stream(
    stream: _Readable,
    source: str,
    is_csv: bool,
    delimiter: str,
    column: str | None,
    encoding: str = "utf-8",
    *,
    stdin: bool = False,
) -> Iterator[InputRow]:
    if encoding.startswith(("utf-16", "utf-32")):
        # Their line ends are not b"\n" alone: decode first, then read UTF-8 lines.
        recoded = _Recoded(stream, encoding)
        try:
            yield from _read_stream(
                recoded, source, is_csv, delimiter, column, "utf-8", stdin=stdin
            )
        finally:
            recoded.detach()
        return
    lines = _Lines(stream, source, encoding)
    if is_csv:
        yield from _csv_rows(lines, source, delimiter, column)
        return
    first = True
    for text in lines:
        lines.row_done()
        client_id = text.strip()
        if client_id:
            if first and stdin:
                _refuse_header(client_id, source, lines.number)
            first = False
            yield InputRow(source=source, line=lines.number, client_id=client_id)


class _Recoded:
    """UTF-8 lines of a stream in a wide encoding (UTF-16, UTF-32), any line end."""

    def __init__(self, stream: _Readable, encoding: str) -> None:
        self._text = io.TextIOWrapper(stream, encoding=encoding, newline=None)  # type: ignore[type-var]
        self._encoding = encoding

    def detach(self) -> None:
        """Let go of the stream without closing it (its owner closes it)."""
        with contextlib.suppress(ValueError):
            self._text.detach()

    def readline(self, size: int = -1, /) -> bytes:
        try:
            return self._text.readline(size).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise OSError(f"not {self._encoding}: {exc.reason}") from None


def _refuse_header(line: str, source: str, number: int) -> None:
    """Stdin is plain text: a first line the CSV reader would take as a header is one."""
    fields = [f.strip().strip('"') for f in line.split(",")]
    named = next((f for f in fields if f in ID_COLUMNS), None)
    if named is not None:
        raise InputError(
            f"the first line {line[:60]!r} is a CSV header, and stdin is read as one ID a "
            f"line: give --column {named} to read it as CSV",
            source=source,
            line=number,
        )


class _Lines:
    """Decoded lines of a binary stream, each checked, with the current line number."""

    __slots__ = ("_encoding", "_pending", "_since_row", "_source", "_stream", "number")

    def __init__(self, stream: _Readable, source: str, encoding: str = "utf-8") -> None:
        self._stream = stream
        self._source = source
        self._encoding = encoding
        # Lines already split off a chunk that ended in CR line ends, not yet returned.
        self._pending: list[bytes] = []
        # The physical line number of the line last returned (1-based).
        self.number = 0
        # Bytes read since the CSV reader last finished a row: bounds a quoted
        # field that runs on over many lines.
        self._since_row = 0

    def __iter__(self) -> _Lines:
        return self

    def _readline(self) -> bytes:
        if self._pending:
            return self._pending.pop()
        raw = self._stream.readline(MAX_LINE_BYTES + 1)
        body = raw[:-1] if raw.endswith(b"\n") else raw
        body = body[:-1] if body.endswith(b"\r") else body
        if b"\r" in body and not self._wide:
            # Old Mac line ends: CR alone ends a line too. A CR-only file longer than
            # MAX_LINE_BYTES arrives in pieces; the piece cut mid-line is read on.
            parts = body.split(b"\r")
            if not raw.endswith(b"\n") and len(raw) > MAX_LINE_BYTES:
                parts[-1] += self._stream.readline(MAX_LINE_BYTES + 1 - len(parts[-1]))
            self._pending = [p + b"\n" for p in reversed(parts[1:])]
            return parts[0] + b"\n"
        return raw

    @property
    def _wide(self) -> bool:
        # UTF-16 and UTF-32 lines hold NUL bytes: split after decoding instead.
        return self._encoding.startswith(("utf-16", "utf-32"))

    def __next__(self) -> str:
        try:
            raw = self._readline()
        except (EOFError, OSError, zlib.error) as exc:
            # gzip raises these for a truncated or corrupt archive.
            raise self._error(f"cannot read: {exc}", self.number + 1) from None
        if not raw:
            raise StopIteration
        self.number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise self._error(f"line longer than {MAX_LINE_BYTES} bytes")
        self._since_row += len(raw)
        if self._since_row > MAX_LINE_BYTES + 1:
            raise self._error(f"CSV record longer than {MAX_LINE_BYTES} bytes")
        if self.number == 1 and raw.startswith(_GZIP_MAGIC):
            raise self._error("gzip data: name the file *.gz, or pipe it through zcat")
        if self.number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")) and not self._wide:
            raise self._error(
                "UTF-16 text (it starts with a UTF-16 byte order mark): give --encoding "
                "utf-16, or convert the file to UTF-8"
            )
        if b"\0" in raw and not self._wide:
            raise self._error("NUL byte: this looks like a binary file, not text")
        try:
            text = raw.decode(self._encoding)
        except UnicodeDecodeError as exc:
            shown = "UTF-8" if self._encoding == "utf-8" else self._encoding
            raise self._error(
                f"not {shown}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}; "
                "if the file is in another encoding, give it with --encoding (e.g. cp1252)"
            ) from None
        if self.number == 1 and text.startswith(_BOM):
            text = text[1:]
        return text

    def row_done(self) -> None:
        self._since_row = 0

    def _error(self, message: str, line: int | None = None) -> InputError:
        return InputError(message, source=self._source, line=line or self.number)


def _csv_rows(lines: _Lines, source: str, delimiter: str, column: str | None) -> Iterator[InputRow]:
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader, None)
        while header is not None and not any(f.strip() for f in header):
            lines.row_done()
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise InputError("empty CSV: no header row", source=source, line=None)
        lines.row_done()
        names = [f.strip() for f in header]
        index = _id_column(names, column, source, lines.number)
        start = lines.number + 1
        for row in reader:
            lines.row_done()
            if any(f.strip() for f in row):
                if index >= len(row):
                    raise InputError(
                        f"{len(row)} fields, but the ID column {names[index]!r} is field "
                        f"{index + 1}",
                        source=source,
                        line=start,
                    )
                yield InputRow(source=source, line=start, client_id=row[index].strip())
            start = lines.number + 1
    except csv.Error as exc:
        raise InputError(f"bad CSV: {exc}", source=source, line=lines.number) from None


def _id_column(names: list[str], column: str | None, source: str, line: int) -> int:
    if column is not None:
        if column in names:
            return names.index(column)
        listed = ", ".join(repr(n) for n in names)
        raise InputError(
            f"no column {column!r} in the header; columns are: {listed}",
            source=source,
            line=line,
        )
    for name in ID_COLUMNS:
        if name in names:
            return names.index(name)
    if names and client_id_problem(names[0]) is None:
        # Taken as a header, this ID would be skipped without a record.
        raise InputError(
            f"the first row starts with the client ID {names[0]!r}, not a header: add a "
            "header row (client_id), or give the file a .txt name",
            source=source,
            line=line,
        )
    return 0
