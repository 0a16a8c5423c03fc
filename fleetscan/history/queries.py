"""The questions a nightly audit asks of the history database.

Each function returns plain dicts (one per row), ready for NDJSON or a table:

- `offline`: devices offline for at least a duration and/or a number of scans.
- `changes`: what changed in the last scan (or a given one), or in the scans that
  started between two times: transitions, and devices seen for the first time.
- `group_shares`: per scan and group, the counts and the online share.
- `scans`: the scans, newest first.

"As of" is the end of the newest scan unless ``at`` says otherwise, so a query asked
at noon about last night's scan gives the same answer as one asked at 3 a.m.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetscan.history.recorder import ScanRow
from fleetscan.history.schema import HistoryError
from fleetscan.ids import group_of
from fleetscan.records import rfc3339

__all__ = [
    "changes",
    "group_shares",
    "last_scan",
    "offline",
    "parse_time",
    "scan_ids_between",
    "scans",
]


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (``Z`` or an offset; naive means UTC), or a date."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use e.g. 2026-11-25 or 2026-11-25T18:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def last_scan(conn: sqlite3.Connection) -> ScanRow | None:
    """The newest scan, or None in an empty database."""
    found = conn.execute("SELECT max(id) FROM scans").fetchone()[0]
    return ScanRow.load(conn, found) if found is not None else None


def _as_of(conn: sqlite3.Connection, at: datetime | None) -> datetime:
    if at is not None:
        return at
    row = conn.execute("SELECT ended_at, started_at FROM scans ORDER BY id DESC LIMIT 1")
    found = row.fetchone()
    if found is None:
        raise HistoryError("the history holds no scan yet")
    return parse_time(found[0] or found[1])


def offline(
    conn: sqlite3.Connection,
    *,
    at_least: timedelta | None = None,
    scans: int | None = None,
    group: str | None = None,
    at: datetime | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Devices now offline, for at least ``at_least`` and at least ``scans`` scans.

    A device went offline after ``offline_since_low`` (its last ``online`` answer;
    None when it was never seen online) and by ``offline_since_high`` (its first
    ``offline`` answer): it has been offline for at least ``offline_for_min_seconds``
    (as of ``at``) and at most ``offline_for_max_seconds``. ``at_least`` is checked
    against the minimum, so every device listed is certainly offline that long.
    Longest offline first.
    """
    now = _as_of(conn, at)
    where = ["state = 'offline'"]
    params: list[Any] = []
    if at_least is not None:
        where.append("since_high <= ?")
        params.append(rfc3339(now - at_least))
    if scans is not None:
        where.append("state_scans >= ?")
        params.append(scans)
    if group is not None:
        where.append("grp = ?")
        params.append(group)
    sql = (
        "SELECT client_id, grp, since_low, since_low_scan, since_high, since_high_scan, "
        "state_scans, last_online_at, last_status, last_checked_at FROM devices "
        f"WHERE {' AND '.join(where)} ORDER BY since_high, client_id"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    for row in conn.execute(sql, params):
        low, high = row[2], row[4]
        yield {
            "client_id": row[0],
            "group": row[1],
            "offline_since_low": low,
            "offline_since_high": high,
            "since_low_scan": row[3],
            "since_high_scan": row[5],
            "offline_scans": row[6],
            "offline_for_min_seconds": _seconds(now - parse_time(high)),
            "offline_for_max_seconds": _seconds(now - parse_time(low)) if low else None,
            "last_seen_online": row[7],
            "last_status": row[8],
            "last_checked_at": row[9],
        }


def _seconds(delta: timedelta) -> float:
    return round(max(0.0, delta.total_seconds()), 3)


def scan_ids_between(
    conn: sqlite3.Connection, since: datetime | None, until: datetime | None
) -> list[int]:
    """The scans that started in ``[since, until)``, oldest first."""
    where, params = [], []
    if since is not None:
        where.append("started_at >= ?")
        params.append(rfc3339(since))
    if until is not None:
        where.append("started_at < ?")
        params.append(rfc3339(until))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT id FROM scans {clause} ORDER BY id"
    return [r[0] for r in conn.execute(sql, params)]


def changes(
    conn: sqlite3.Connection, scan_ids: list[int], *, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """What the given scans changed: state transitions, and devices first seen.

    A transition is ``before`` -> ``after`` (``online``/``offline``), which happened
    after ``before_at`` (the last answer of the old state) and by ``at`` (the first
    of the new). A device first seen has ``before`` None. ``error`` and ``invalid``
    answers are not changes of state (they are in the devices' ``last_status``).
    """
    if not scan_ids:
        return
    marks = ",".join("?" * len(scan_ids))
    sql = f"""
        SELECT scan_id, client_id, before, after, before_at, at FROM transitions
        WHERE scan_id IN ({marks})
        UNION ALL
        SELECT first_scan_id, client_id, NULL, coalesce(state, last_status), NULL,
               coalesce(since_high, last_checked_at)
        FROM devices WHERE first_scan_id IN ({marks})
        ORDER BY 1, 6, 2
    """
    params: list[Any] = [*scan_ids, *scan_ids]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    for row in conn.execute(sql, params):
        yield {
            "scan_id": row[0],
            "client_id": row[1],
            "group": group_of(row[1]),
            "before": row[2],
            "after": row[3],
            "before_at": row[4],
            "at": row[5],
        }


def group_shares(
    conn: sqlite3.Connection, *, last: int = 30, group: str | None = None
) -> Iterator[dict[str, Any]]:
    """Per scan (the ``last`` newest, oldest first) and group: counts and online share.

    The share is online / (online + offline): IDs that answered ``error`` or were
    ``invalid`` are counted but left out of it. None when no ID answered.
    """
    params: list[Any] = [last]
    clause = ""
    if group is not None:
        clause = "AND g.grp = ?"
        params.append(group)
    sql = f"""
        SELECT s.id, s.started_at, g.grp, g.online, g.offline, g.error, g.invalid
        FROM scan_groups g JOIN scans s ON s.id = g.scan_id
        WHERE s.id IN (SELECT id FROM scans ORDER BY id DESC LIMIT ?) {clause}
        ORDER BY s.id, g.grp
    """
    for row in conn.execute(sql, params):
        answered = row[3] + row[4]
        yield {
            "scan_id": row[0],
            "started_at": row[1],
            "group": row[2],
            "online": row[3],
            "offline": row[4],
            "error": row[5],
            "invalid": row[6],
            "online_share": round(row[3] / answered, 4) if answered else None,
        }


def scans(conn: sqlite3.Connection, *, last: int | None = None) -> Iterator[dict[str, Any]]:
    """The scans, newest first, with their counts, cost and the online share."""
    sql = "SELECT id FROM scans ORDER BY id DESC"
    params: list[Any] = []
    if last is not None:
        sql += " LIMIT ?"
        params.append(last)
    for (scan_id,) in conn.execute(sql, params).fetchall():
        row = ScanRow.load(conn, scan_id).to_dict()
        answered = row["ids_online"] + row["ids_offline"]
        row["online_share"] = round(row["ids_online"] / answered, 4) if answered else None
        yield row
