"""Between scans: peak memory and time of ``fleetscan diff``, and of recording a night's
scan into the history.

    python benchmarks/bench_audit.py diff 1000000          # two files of 1M records each
    python benchmarks/bench_audit.py history 1000000       # two nights of 1M IDs

- ``diff N``: two scan outputs of N records each (plus 1% appeared in the second, 1%
  of the first gone from it), the second in another order (a fixed permutation, as
  completion order shuffles a real scan), 5% of statuses changed, ~1% ``error``.
  The real command, ``python -m fleetscan diff OLD NEW -o OUT --quiet``, runs in a
  child process; peak RSS is that child's (``os.wait4``). The number of changes it
  lists is checked against the count the generator knows.
- ``history N``: a child feeds N `Record` objects to a `HistoryRecorder` as the scan
  would (``record`` on the caller's thread, SQLite on the recorder's), twice: the
  first night inserts every device in input order, the second updates them in a
  shuffled order with 5% of them changed (transitions). Per night: wall seconds from
  ``begin`` to ``end`` returning (everything committed), and the time the caller spent
  inside ``record`` (what the event loop would pay).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_memory import peak_rss
from emulator_process import child_env
from figures import Figure
from fleet_ids import client_id

ROOT = Path(__file__).resolve().parent.parent
DIFF_TARGET_MIB = 1000  # "well under 1 GB" for two files of 10M records
# A prime that divides no benchmark size: i -> i * _STRIDE mod n is a permutation.
_STRIDE = 7_368_787
_CHUNK = 50_000


def _status(i: int, night: int) -> str:
    if (i * 2654435761 + night) % 97 == 1:
        return "error"
    online = (i * 2654435761 >> 7) % 10 < 6
    if night and i % 20 == 0:
        online = not online
    return "online" if online else "offline"


def _line(cid: str, status: str, at: str) -> str:
    online = "true" if status == "online" else "false" if status == "offline" else "null"
    error = (
        '{"code":"InternalError","message":"The request processing has failed.","http_status":417}'
        if status == "error"
        else "null"
    )
    return (
        f'{{"client_id":"{cid}","instance_id":"mqtt-cn-bench","status":"{status}",'
        f'"online":{online},"checked_at":"{at}","api":"QuerySessionByClientId",'
        f'"request_id":"5D1E4C0F-0000-4000-8000-{len(cid):012d}","attempts":1,"error":{error}}}\n'
    )


def _order(n: int, shuffled: bool) -> range | map[int]:
    if not shuffled:
        return range(n)
    assert n % _STRIDE
    return map(lambda k: k * _STRIDE % n, range(n))


def write_pair(folder: Path, n: int) -> tuple[Path, Path, int]:
    """Two scan outputs and the number of changes between them."""
    old, new = folder / "old.ndjson", folder / "new.ndjson"
    changes = 0
    with open(old, "w", encoding="ascii") as f:
        buffer = []
        for i in range(n):
            buffer.append(_line(client_id(i), _status(i, 0), "2026-11-24T02:00:00.000Z"))
            if len(buffer) >= _CHUNK:
                f.write("".join(buffer))
                buffer.clear()
        f.write("".join(buffer))
    appeared = n // 100
    with open(new, "w", encoding="ascii") as f:
        buffer = []
        for i in _order(n, shuffled=True):
            if i % 100 == 50:
                changes += 1  # disappeared
                continue
            status = _status(i, 1)
            changes += status != _status(i, 0)
            buffer.append(_line(client_id(i), status, "2026-11-25T02:00:00.000Z"))
            if len(buffer) >= _CHUNK:
                f.write("".join(buffer))
                buffer.clear()
        for i in range(n, n + appeared):
            buffer.append(_line(client_id(i), "online", "2026-11-25T02:00:00.000Z"))
            changes += 1
        f.write("".join(buffer))
    return old, new, changes


def diff_peak(folder: Path, n: int) -> dict[str, float]:
    old, new, expected = write_pair(folder, n)
    out = folder / "changes.ndjson"
    args = [sys.executable, "-m", "fleetscan", "diff", str(old), str(new), "-o", str(out)]
    env = child_env()
    env["TMPDIR"] = str(folder)  # the bucket files
    _, peak, seconds = peak_rss([*args, "--quiet"], env=env)
    with open(out, "rb") as f:
        listed = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    size = old.stat().st_size + new.stat().st_size
    for path in (old, new, out):
        path.unlink()
    if listed != expected:
        raise RuntimeError(f"diff listed {listed} changes, the generator made {expected}")
    return {"peak_mib": peak, "seconds": seconds, "changes": listed, "input_bytes": size}


def _history_child(n: int, db: str) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from datetime import UTC, datetime, timedelta

    from fleetscan.history import HistoryRecorder
    from fleetscan.records import Record, Status
    from fleetscan.summary import ScanCounters, ScanSummary

    nights = []
    start = datetime(2026, 11, 24, 2, tzinfo=UTC)
    for night in (0, 1):
        when = start + timedelta(days=night)
        recorder = HistoryRecorder(db)
        began = time.perf_counter()
        recorder.begin(instance_id="mqtt-cn-bench", mode="single", output=None, started_at=when)
        in_record = 0.0
        record = recorder.record
        for k, i in enumerate(_order(n, shuffled=bool(night))):
            r = Record(
                client_id=client_id(i),
                instance_id="mqtt-cn-bench",
                status=Status(_status(i, night)),
                checked_at=when + timedelta(microseconds=k * 1000),
            )
            t = time.perf_counter()
            record(r)
            in_record += time.perf_counter() - t
        summary = ScanSummary.build(
            ScanCounters(),
            mode="single",
            api="QuerySessionByClientId",
            instance_id="mqtt-cn-bench",
            qps=300,
            started_at=when,
            ended_at=when,
            duration_seconds=1.0,
            not_scanned=0,
            instance_tps=None,
            price_per_million=None,
            outcome="completed",
        )
        row = recorder.end(summary)
        seconds = time.perf_counter() - began
        recorder.close()
        assert row.ids_online + row.ids_offline + row.ids_error == n
        nights.append({"seconds": seconds, "record_us": in_record / n * 1e6})
    import sqlite3

    conn = sqlite3.connect(db)
    transitions = conn.execute("SELECT count(*) FROM transitions").fetchone()[0]
    conn.close()
    return {
        "first_seconds": nights[0]["seconds"],
        "second_seconds": nights[1]["seconds"],
        "first_record_us": nights[0]["record_us"],
        "second_record_us": nights[1]["record_us"],
        "transitions": transitions,
        "db_bytes": os.path.getsize(db),
    }


def history_run(folder: Path, n: int) -> dict[str, float]:
    db = folder / "fleet.db"
    result = folder / "history.json"
    args = [sys.executable, __file__, "--history-child", str(n), str(db), str(result)]
    _, peak, _ = peak_rss(args, env=child_env())
    data: dict[str, float] = json.loads(result.read_text())
    for path in folder.glob("fleet.db*"):
        path.unlink()
    result.unlink()
    data["peak_mib"] = peak
    return data


def run(
    *,
    diff_records: int,
    history_ids: int,
    folder: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Figure]:
    """The suite's figures for diff and history."""
    say = log or (lambda message: None)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-audit-", dir=folder) as tmp:
        scratch = Path(tmp)
        say(f"audit: fleetscan diff of two files of {diff_records:,} records")
        d = diff_peak(scratch, diff_records)
        figures.append(
            Figure(
                name=f"diff: peak RSS and time, {diff_records:,} + {diff_records:,} records",
                target=f"<= {DIFF_TARGET_MIB} MB" if diff_records >= 10_000_000 else "",
                measured=f"{d['peak_mib']:.0f} MiB, {d['seconds']:.0f} s "
                f"({d['input_bytes'] / 2**30:.1f} GiB in, {d['changes']:,} changes, "
                f"{d['seconds'] / (2 * diff_records) * 1e6:.1f} us/record)",
                passed=d["peak_mib"] * 2**20 <= DIFF_TARGET_MIB * 10**6
                if diff_records >= 10_000_000
                else None,
                data=d,
            )
        )
        say(f"audit: recording two nights of {history_ids:,} IDs")
        h = history_run(scratch, history_ids)
        figures.append(
            Figure(
                name=f"history: recording a night of {history_ids:,} IDs",
                target="minutes, not hours" if history_ids >= 10_000_000 else "",
                measured=f"first night {h['first_seconds']:.0f} s, second (shuffled, 5% "
                f"changed) {h['second_seconds']:.0f} s; {h['second_record_us']:.2f} us/record "
                f"on the caller's thread; peak {h['peak_mib']:.0f} MiB; "
                f"db {h['db_bytes'] / 2**20:.0f} MiB",
                passed=max(h["first_seconds"], h["second_seconds"]) < 3600
                if history_ids >= 10_000_000
                else None,
                data=h,
            )
        )
    return figures


def main() -> None:
    if sys.argv[1:2] == ["--history-child"]:
        n, db, out = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        Path(out).write_text(json.dumps(_history_child(n, db)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("diff", "history"))
    parser.add_argument("n", type=int)
    parser.add_argument("--dir", help="scratch directory (default: the system's temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-audit-", dir=args.dir) as tmp:
        if args.what == "diff":
            print(json.dumps(diff_peak(Path(tmp), args.n)), flush=True)
        else:
            print(json.dumps(history_run(Path(tmp), args.n)), flush=True)


if __name__ == "__main__":
    main()
