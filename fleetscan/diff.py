"""What changed between two scan outputs, in bounded memory.

::

    summary = diff_files("monday.ndjson", "tuesday.ndjson", emit=out.write)

Both files hold NDJSON records in any order (scans write them in completion order).
Each is read once and hash-partitioned by ``client_id`` into temporary bucket files
(a stable CRC-32 of the ID, so an ID lands in the same bucket number for both files);
the buckets are then compared pair by pair with two small dicts. Memory is one
bucket pair, not the fleet: the bucket count grows with the larger file
(`BUCKET_BYTES` of input per bucket), so two files of 10 million records each need
some tens of MiB. Small inputs skip the temporary files.

An ID listed more than once in one file (a scan that was resumed by hand, a file
concatenated from two runs) counts by its last final record (``online``, ``offline``,
``invalid``); an ``error`` record counts only when the file holds no final record for
that ID, the last one then. That is how ``--resume`` reads a file too.

One change per ID whose status differs (absent counts as ``null``), with a ``change``
kind: ``appeared``, ``disappeared``, ``went_offline`` (online to offline),
``came_online`` (offline to online), ``now_error`` (to ``error``), ``other`` (any
other pair, e.g. ``error`` to ``online`` or anything to ``invalid``). The output is
grouped by bucket, not sorted: pipe it through ``sort`` or jq when order matters.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from fleetscan.errors import InputError
from fleetscan.ids import group_of
from fleetscan.records import Status

__all__ = [
    "BUCKET_BYTES",
    "CHANGE_KINDS",
    "MAX_GROUPS",
    "DiffSummary",
    "change_kind",
    "diff_files",
]

# Input bytes per bucket (of the larger file): a bucket pair in dicts then takes
# roughly 50 MiB at ~250 bytes a record. Below this, no temporary files at all.
BUCKET_BYTES = 48 * 1024 * 1024
# Open bucket files are two per bucket: stay far below the usual 1024 descriptors.
_MAX_BUCKETS = 400
# Distinct groups counted one by one; past this, the rest are summed as "(other)".
MAX_GROUPS = 10_000
_OTHER_GROUP = "(other)"

CHANGE_KINDS = ("went_offline", "came_online", "appeared", "disappeared", "now_error", "other")

_STATUSES = frozenset(s.value for s in Status)
_FINAL = frozenset({Status.ONLINE.value, Status.OFFLINE.value, Status.INVALID.value})
_ERROR = Status.ERROR.value

# (status, checked_at) of an ID in one file.
_Entry = tuple[str, str | None]


def change_kind(before: str | None, after: str | None) -> str:
    """The kind of change from status ``before`` to ``after`` (None: absent)."""
    if before is None:
        return "appeared"
    if after is None:
        return "disappeared"
    if after == _ERROR:
        return "now_error"
    if before == Status.ONLINE and after == Status.OFFLINE:
        return "went_offline"
    if before == Status.OFFLINE and after == Status.ONLINE:
        return "came_online"
    return "other"


@dataclass(slots=True, kw_only=True)
class DiffSummary:
    """Counts of a diff: IDs per file, changes by kind, and the same per group."""

    old: str
    new: str
    old_ids: int = 0
    new_ids: int = 0
    unchanged: int = 0
    changes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    groups: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(self.changes.values())

    def count(self, group: str, kind: str) -> None:
        self.changes[kind] += 1
        counts = self.groups.get(group)
        if counts is None:
            if len(self.groups) >= MAX_GROUPS:
                group = _OTHER_GROUP
                counts = self.groups.get(group)
            if counts is None:
                counts = self.groups[group] = dict.fromkeys(CHANGE_KINDS, 0)
        counts[kind] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "old_ids": self.old_ids,
            "new_ids": self.new_ids,
            "unchanged": self.unchanged,
            "changed": self.changed,
            **self.changes,
            "groups": dict(sorted(self.groups.items())),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    def to_text(self) -> str:
        c = self.changes
        lines = [
            f"fleetscan diff: {self.old} ({self.old_ids} IDs) -> {self.new} ({self.new_ids} IDs)",
            f"  changed   {self.changed}, unchanged {self.unchanged}",
            f"  went offline {c['went_offline']}, came online {c['came_online']}, "
            f"appeared {c['appeared']}, disappeared {c['disappeared']}, "
            f"now error {c['now_error']}, other {c['other']}",
        ]
        for group, counts in sorted(self.groups.items()):
            shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
            lines.append(f"  {group}: {shown}")
        return "\n".join(lines) + "\n"


def diff_files(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    *,
    emit: Callable[[bytes], object],
    bucket_bytes: int = BUCKET_BYTES,
    tmp_dir: str | None = None,
) -> DiffSummary:
    """Compare two scan outputs; ``emit`` gets one NDJSON line per changed ID.

    Raises `InputError` (file and line) on anything that is not a fleetscan record.
    Temporary bucket files go to ``tmp_dir`` (default: the system's) and are removed.
    """
    old_name, new_name = os.fspath(old), os.fspath(new)
    summary = DiffSummary(old=old_name, new=new_name)
    size = max(_size(old_name), _size(new_name))
    buckets = min(_MAX_BUCKETS, max(1, -(-size // bucket_bytes)))
    if buckets == 1:
        _compare(_read(old_name), _read(new_name), summary, emit)
        return summary
    with tempfile.TemporaryDirectory(prefix="fleetscan-diff-", dir=tmp_dir) as folder:
        _partition(old_name, os.path.join(folder, "old"), buckets)
        _partition(new_name, os.path.join(folder, "new"), buckets)
        for k in range(buckets):
            old_path = os.path.join(folder, f"old.{k}")
            new_path = os.path.join(folder, f"new.{k}")
            _compare(_read_bucket(old_path), _read_bucket(new_path), summary, emit)
            os.unlink(old_path)  # free the disk as we go
            os.unlink(new_path)
    return summary


def _size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from None


def _read(name: str) -> Iterator[tuple[str, str, str | None]]:
    """(client_id, status, checked_at) of every record of a scan output, checked."""
    try:
        f = open(name, "rb", buffering=1024 * 1024)  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", source=name) from None
    with f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _not_output(name, number, raw) from None
            if not isinstance(record, dict):
                raise _not_output(name, number, raw)
            client_id = record.get("client_id")
            status = record.get("status")
            checked_at = record.get("checked_at")
            if not isinstance(client_id, str) or status not in _STATUSES:
                raise InputError(
                    "a record needs a client_id and a known status", source=name, line=number
                )
            yield client_id, status, checked_at if isinstance(checked_at, str) else None


def _not_output(name: str, number: int, raw: bytes) -> InputError:
    if not raw.endswith(b"\n"):
        why = "a torn last line (the scan was killed): `fleetscan scan --resume` repairs it"
    else:
        why = "not a fleetscan NDJSON record"
    return InputError(why, source=name, line=number)


def _partition(name: str, prefix: str, buckets: int) -> None:
    files: list[IO[bytes]] = []
    with contextlib.ExitStack() as stack:
        for k in range(buckets):
            files.append(stack.enter_context(open(f"{prefix}.{k}", "wb", buffering=64 * 1024)))
        dumps = orjson.dumps
        crc = zlib.crc32
        for client_id, status, checked_at in _read(name):
            line = dumps((client_id, status, checked_at))
            files[crc(client_id.encode()) % buckets].write(line + b"\n")


def _read_bucket(path: str) -> Iterator[tuple[str, str, str | None]]:
    with open(path, "rb", buffering=1024 * 1024) as f:
        for raw in f:
            client_id, status, checked_at = orjson.loads(raw)
            yield client_id, status, checked_at


def _load(records: Iterator[tuple[str, str, str | None]]) -> dict[str, _Entry]:
    """One file's IDs: the last final record wins; ``error`` only without a final one."""
    entries: dict[str, _Entry] = {}
    for client_id, status, checked_at in records:
        if status == _ERROR:
            known = entries.get(client_id)
            if known is not None and known[0] in _FINAL:
                continue
        entries[client_id] = (status, checked_at)
    return entries


def _compare(
    old: Iterator[tuple[str, str, str | None]],
    new: Iterator[tuple[str, str, str | None]],
    summary: DiffSummary,
    emit: Callable[[bytes], object],
) -> None:
    before = _load(old)
    after = _load(new)
    summary.old_ids += len(before)
    summary.new_ids += len(after)
    dumps = orjson.dumps
    for client_id, (status, checked_at) in after.items():
        was = before.pop(client_id, None)
        if was is not None and was[0] == status:
            summary.unchanged += 1
            continue
        _emit_change(client_id, was, (status, checked_at), summary, emit, dumps)
    for client_id, was in before.items():
        _emit_change(client_id, was, None, summary, emit, dumps)


def _emit_change(
    client_id: str,
    was: _Entry | None,
    now: _Entry | None,
    summary: DiffSummary,
    emit: Callable[[bytes], object],
    dumps: Callable[..., bytes],
) -> None:
    before = was[0] if was else None
    after = now[0] if now else None
    kind = change_kind(before, after)
    group = group_of(client_id)
    summary.count(group, kind)
    emit(
        dumps(
            {
                "client_id": client_id,
                "group": group,
                "before": before,
                "after": after,
                "change": kind,
                "before_checked_at": was[1] if was else None,
                "after_checked_at": now[1] if now else None,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
    )
