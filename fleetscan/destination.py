"""Where a scan's records and summary go: checked before anything is written, and
written so that a refused or crashed start never destroys an earlier result.

`check_destinations` refuses, before any file is opened for writing: an output (or
summary) that is one of the inputs, by path, symlink or hard link; two destinations
that are one file (``-`` is stdout wherever a file is taken, and no ``-o`` is stdout
too); a directory; a missing directory; a place that cannot be written; and
``--resume`` on anything but a regular file (resume reads the file back: a pipe such
as ``/dev/stdout`` would be read from its own output).

`OutputFile` writes a new regular file beside its final name (``.NAME.XXXX.part`` in
the same directory) and moves it into place at its first flushed record, or at the
end of a run that wrote none. Before that moment an earlier file of that name is
untouched (a refused start, a crash or a signal at start-up lose nothing); after it,
the file is the new scan's, appended to in place, so a ``kill -9`` leaves it
resumable exactly as before. ``--resume`` appends to the file itself; devices and
pipes (``/dev/full``, ``/dev/stdout``) are written directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

from fleetscan.errors import UsageError

__all__ = [
    "STDOUT",
    "OutputFile",
    "check_destinations",
    "fsync_directory",
    "mkstemp_whole",
    "write_atomically",
]

# The name that means standard output wherever a destination file is taken.
STDOUT = "-"


@dataclass(frozen=True, slots=True)
class _Place:
    option: str  # "-o" or "--summary", for messages
    name: str  # a path, or STDOUT


def check_destinations(
    *,
    output: str | None,
    summary: str | None,
    inputs: Sequence[str],
    resume: bool,
) -> None:
    """Refuse any destination that would lose data or cannot be written (UsageError)."""
    places = [_Place("-o", output or STDOUT)]
    if summary is not None:
        places.append(_Place("--summary", summary))
    if resume and places[0].name == STDOUT:
        raise UsageError("--resume needs -o FILE: it continues the scan written there")
    for place in places:
        _check_writable(place, resume=resume and place.option == "-o")
    _check_no_clash(places[0], places[1:])
    for place in places:
        for source in inputs:
            if source != "-" and _same_file(place, _Place("input", source)):
                raise UsageError(
                    f"{place.option} {place.name} is the input {source}: writing it would "
                    "destroy the IDs before they are read; choose another file"
                )


def _check_writable(place: _Place, *, resume: bool) -> None:
    if place.name == STDOUT:
        return
    name = place.name
    where = f"{place.option} {name}"
    try:
        info = os.stat(name)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{where}: {exc.strerror or exc}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{where} is a directory; give a file name")
    if info is not None and not stat.S_ISREG(info.st_mode):
        if resume:
            raise UsageError(
                f"--resume reads {name} back, and it is not a regular file (a pipe, a "
                "terminal or a device): resume works on a regular -o FILE only"
            )
        if not os.access(name, os.W_OK):
            raise UsageError(f"{where}: permission denied")
        return
    directory = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(directory):
        raise UsageError(f"{where}: no such directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: cannot create files in {directory} (permission denied)")
    if info is not None and resume and not os.access(name, os.R_OK | os.W_OK):
        raise UsageError(f"{where}: permission denied")


def _check_no_clash(first: _Place, others: Sequence[_Place]) -> None:
    for other in others:
        if _same_file(first, other):
            shown = "stdout" if first.name == STDOUT else first.name
            raise UsageError(
                f"{first.option} and {other.option} are both {shown}: the summary would "
                "overwrite or mix with the records; give them different destinations"
            )


def _same_file(a: _Place, b: _Place) -> bool:
    """Whether two places are one file: both stdout, one path, or one inode."""
    if a.name == STDOUT and b.name == STDOUT:
        return True
    ka, kb = _identity(a.name), _identity(b.name)
    if ka is not None and ka == kb:
        return True
    if STDOUT in (a.name, b.name):
        return False
    return os.path.realpath(a.name) == os.path.realpath(b.name)


def _identity(name: str) -> tuple[int, int] | None:
    try:
        info = os.fstat(sys.stdout.fileno()) if name == STDOUT else os.stat(name)
    except (OSError, ValueError, AttributeError):
        return None
    return info.st_dev, info.st_ino


class OutputFile:
    """The record stream of one run; see the module docstring.

    ``stream`` is what the writer writes to. `commit` moves a new file into place (the
    stream calls it at its first flush of data); `close` ends the run, committing a
    file that holds no record yet only when ``keep_empty``, and removing the temporary
    file otherwise.
    """

    def __init__(self, name: str | None, *, resume: bool) -> None:
        self.name = name if name not in (None, STDOUT) else None
        self._tmp: str | None = None
        self._committed = False
        self.stream: BinaryIO
        if self.name is None:
            self.stream = sys.stdout.buffer
            return
        if resume:
            self.stream = open(self.name, "ab")  # noqa: SIM115 - closed by close()
            return
        try:
            special = not stat.S_ISREG(os.stat(self.name).st_mode)
        except FileNotFoundError:
            special = False
        if special:  # a device or a pipe: there is nothing to move into place
            self.stream = open(self.name, "wb")  # noqa: SIM115
            return
        fd, self._tmp = mkstemp_whole(self.name, ".part")
        self.stream = cast(BinaryIO, _CommitOnFlush(os.fdopen(fd, "wb"), self))

    @property
    def temporary(self) -> str | None:
        """The temporary file's path while the output is not in place yet."""
        return None if self._committed else self._tmp

    def commit(self) -> None:
        """Move the new file into place (once); from now on it is the output."""
        if self._tmp is None or self._committed:
            return
        name = self.name
        assert name is not None
        with contextlib.suppress(OSError):  # keep the mode a plain open() would give
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)
        os.replace(self._tmp, name)
        self._committed = True
        fsync_directory(os.path.dirname(os.path.abspath(name)))

    def close(self, *, keep_empty: bool) -> None:
        """Close the stream; commit a record-less new file only if ``keep_empty``."""
        if self.name is None:
            return
        try:
            with contextlib.suppress(OSError):  # a failed write was reported already
                self.stream.close()
            if self._tmp is not None and not self._committed and keep_empty:
                self.commit()
        finally:
            if self._tmp is not None and not self._committed:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)


class _CommitOnFlush:
    """A file stream that moves its `OutputFile` into place once data reached it."""

    def __init__(self, raw: BinaryIO, owner: OutputFile) -> None:
        self._raw = raw
        self._owner = owner
        self._dirty = False

    def write(self, data: bytes | memoryview) -> int:
        self._dirty = True
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()
        if self._dirty:
            self._owner.commit()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


def mkstemp_whole(beside: str, suffix: str) -> tuple[int, str]:
    """A hidden temporary file next to ``beside``: (fd, path).

    SIGINT and SIGTERM wait while it is created: a signal that landed between the file's
    creation and the caller learning its name would leave it behind for good.
    """
    directory = os.path.dirname(os.path.abspath(beside))
    prefix = f".{os.path.basename(beside)}."
    signals = {signal.SIGINT, signal.SIGTERM}
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    except (AttributeError, OSError, ValueError):  # no sigmask here (Windows)
        return tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    try:
        return tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def write_atomically(name: str, data: bytes) -> None:
    """Write ``data`` to ``name`` (``-``: stdout) through a temporary file beside it."""
    if name == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        special = not stat.S_ISREG(os.stat(name).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        with open(name, "wb") as f:
            f.write(data)
        return
    out = OutputFile(name, resume=False)
    try:
        out.stream.write(data)
        out.stream.flush()
    finally:
        out.close(keep_empty=True)


def fsync_directory(directory: str) -> None:
    """Makes a rename into ``directory`` durable; not every platform can open one."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
