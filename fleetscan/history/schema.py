"""The history database's schema, its version (``PRAGMA user_version``) and migrations.

Version 1 was the first shape: devices, scans and transitions. Version 2 keeps what a
scan cost (calls, transactions, duration, outcome) on its row, its counts per group
in ``scan_groups``, and stages a scan's answers in ``pending`` until its end.
`open_database` brings any older file up to `SCHEMA_VERSION`, one step at a time,
each step in a transaction of its own; a file newer than this fleetscan is refused
rather than guessed at.

The tables (times are RFC 3339 UTC strings with milliseconds, as in the records, so
they sort as text):

- ``devices``: one row per client ID ever seen. ``state`` is the last definite answer
  (``online``/``offline``; NULL until there is one): an ``error``, ``invalid`` or
  missing answer leaves it, and the spell it belongs to, alone. The current state
  began after ``since_low`` (the last answer of the state before, NULL when there was
  none) and by ``since_high`` (its first answer); ``state_scans`` counts the scans
  that saw it. ``seen_at`` is the last definite answer, ``last_online_at`` the last
  ``online`` one, ``last_status`` the last answer of any kind.
- ``scans``: one row per scan (a resumed scan keeps its row): when, instance, mode,
  the output file it wrote, counts by status, and (v2) its cost.
- ``transitions``: each change of ``state``, written by a trigger, with the bounds
  of when it happened.
- ``scan_groups`` (v2): counts by status per group per scan.
- ``pending`` (v2): the answers of scans not yet merged into ``devices``, appended as
  they arrive (see ``recorder.py``: appending is cheap in any order, updating ten
  million devices in the scan's order is not).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from fleetscan.errors import FleetscanError

__all__ = ["SCHEMA_VERSION", "HistoryError", "connect", "open_database"]

SCHEMA_VERSION = 2


class HistoryError(FleetscanError):
    """The history database cannot be used (not one of ours, too new, unwritable)."""


_V1 = """
CREATE TABLE scans (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    instance_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    output TEXT,
    ids_online INTEGER NOT NULL DEFAULT 0,
    ids_offline INTEGER NOT NULL DEFAULT 0,
    ids_error INTEGER NOT NULL DEFAULT 0,
    ids_invalid INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE devices (
    client_id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    state TEXT,
    since_low TEXT,
    since_low_scan INTEGER,
    since_high TEXT,
    since_high_scan INTEGER,
    state_scans INTEGER NOT NULL,
    seen_at TEXT,
    seen_scan INTEGER,
    last_online_at TEXT,
    last_status TEXT NOT NULL,
    last_checked_at TEXT NOT NULL,
    last_scan_id INTEGER NOT NULL,
    first_scan_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE transitions (
    scan_id INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    before_at TEXT,
    at TEXT NOT NULL
);
CREATE INDEX transitions_scan ON transitions (scan_id);
CREATE INDEX transitions_at ON transitions (at);
CREATE TRIGGER devices_transition AFTER UPDATE OF state ON devices
WHEN old.state IS NOT NULL AND new.state IS NOT old.state
BEGIN
    INSERT INTO transitions (scan_id, client_id, before, after, before_at, at)
    VALUES (new.last_scan_id, new.client_id, old.state, new.state,
            new.since_low, new.since_high);
END;
"""

_V2 = """
ALTER TABLE scans ADD COLUMN outcome TEXT;
ALTER TABLE scans ADD COLUMN runs INTEGER NOT NULL DEFAULT 1;
ALTER TABLE scans ADD COLUMN calls_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN calls_throttled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN calls_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN billable_transactions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN duration_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN peak_tps INTEGER NOT NULL DEFAULT 0;
CREATE TABLE scan_groups (
    scan_id INTEGER NOT NULL,
    grp TEXT NOT NULL,
    online INTEGER NOT NULL,
    offline INTEGER NOT NULL,
    error INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    PRIMARY KEY (scan_id, grp)
) WITHOUT ROWID;
CREATE TABLE pending (
    scan_id INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    status TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
-- Version 1 kept no cost and no groups: its scans count as finished, their groups
-- are rebuilt from the devices each scan answered last (earlier scans' are lost).
UPDATE scans SET outcome = 'completed' WHERE ended_at IS NOT NULL;
INSERT INTO scan_groups
SELECT last_scan_id, grp,
       sum(last_status = 'online'), sum(last_status = 'offline'),
       sum(last_status = 'error'), sum(last_status = 'invalid')
FROM devices GROUP BY last_scan_id, grp;
"""

# MIGRATIONS[n] takes a database from version n to n + 1.
MIGRATIONS: dict[int, str] = {0: _V1, 1: _V2}


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection with fleetscan's settings (WAL, relaxed fsync, a larger cache)."""
    conn = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL loses at most the last commits on a power cut, never the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB
    # The merge's index build is one large transaction: give its WAL space back after.
    conn.execute("PRAGMA journal_size_limit = 67108864")
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


def open_database(
    path: str | os.PathLike[str],
    *,
    create: bool = True,
    target: int = SCHEMA_VERSION,
    on_migrate: Callable[[int, int], None] | None = None,
) -> sqlite3.Connection:
    """Open (or create) a history database and migrate it to ``target``."""
    name = os.fspath(path)
    if not create and not os.path.exists(name):
        raise HistoryError(f"{name}: no such history database")
    if os.path.isdir(name):
        raise HistoryError(f"{name}: is a directory, not a history database")
    try:
        conn = connect(name)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and _has_tables(conn):
            raise HistoryError(f"{name}: an SQLite file, but not a fleetscan history database")
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"{name}: not a history database ({exc})") from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise HistoryError(
            f"{name}: schema version {version} is newer than this fleetscan knows "
            f"({SCHEMA_VERSION}); upgrade fleetscan"
        )
    while version < target:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            conn.close()
            raise HistoryError(
                f"{name}: migration to version {version + 1} failed: {exc}"
            ) from None
        if on_migrate is not None:
            on_migrate(version, version + 1)
        version += 1
    return conn


def _has_tables(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (``executescript`` would commit)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements
