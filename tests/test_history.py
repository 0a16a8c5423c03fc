"""The scan history: the state machine, the schema's migrations, a sequence of scans
against the emulator with churn, resumed scans recorded once, and the queries."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from emulator_fixtures import FakeClock

from fleetscan.cli import main
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Faults,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)
from fleetscan.history import (
    SCHEMA_VERSION,
    HistoryError,
    HistoryRecorder,
    HistorySink,
    HistoryWriteError,
    open_database,
)
from fleetscan.history.schema import MIGRATIONS
from fleetscan.records import Record, Status, rfc3339
from fleetscan.summary import ScanCounters, ScanSummary

ROOMY = Limits(qps_single=5000, qps_batch=5000, ip_limit=0)
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "FLEETSCAN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    return tmp_path


def summary_for(started: datetime, **counts: int) -> ScanSummary:
    return ScanSummary.build(
        ScanCounters(**counts),
        mode="single",
        api="QuerySessionByClientId",
        instance_id="mqtt-cn-x",
        qps=300,
        started_at=started,
        ended_at=started + timedelta(minutes=10),
        duration_seconds=600.0,
        not_scanned=0,
        instance_tps=None,
        price_per_million=None,
        outcome="completed",
    )


def record_scan(db: Path, day: int, answers: dict[str, str], **counts: int) -> None:
    """One scan at T0 + ``day`` days: each ID answers at T0 + day + 1 s."""
    started = T0 + timedelta(days=day)
    recorder = HistoryRecorder(db, batch_size=3)
    try:
        recorder.begin(instance_id="mqtt-cn-x", mode="single", output=None, started_at=started)
        for cid, status in answers.items():
            recorder.record(
                Record(
                    client_id=cid,
                    instance_id="mqtt-cn-x",
                    status=Status(status),
                    checked_at=started + timedelta(seconds=1),
                )
            )
        recorder.end(summary_for(started, **counts))
    finally:
        recorder.close()


def at(day: int) -> str:
    return rfc3339(T0 + timedelta(days=day, seconds=1))


def devices(db: Path) -> dict[str, dict[str, Any]]:
    conn = open_database(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["client_id"]: dict(r) for r in conn.execute("SELECT * FROM devices")}
    finally:
        conn.close()


def transitions(db: Path) -> list[tuple[Any, ...]]:
    conn = open_database(db)
    try:
        return conn.execute(
            "SELECT scan_id, client_id, before, after, before_at, at FROM transitions "
            "ORDER BY scan_id, client_id"
        ).fetchall()
    finally:
        conn.close()


# --- the state machine ---------------------------------------------------------------------


def test_since_bounds_lie_between_the_last_answer_of_one_state_and_the_first_of_the_next(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fleet.db"
    a, b, c, d = (f"GID_x@@@{n}" for n in "abcd")
    record_scan(db, 0, {a: "online", b: "offline", c: "error", d: "invalid"})
    record_scan(db, 1, {a: "online", b: "error", c: "offline"})  # d missing
    record_scan(db, 2, {a: "offline", b: "offline", d: "invalid"})  # c missing
    record_scan(db, 3, {a: "error", b: "online", c: "offline"})
    record_scan(db, 4, {a: "offline", c: "online"})  # b missing
    rows = devices(db)
    # a: online, online, offline, error, offline -> offline since (day 1, day 2]
    assert rows[a]["state"] == "offline"
    assert (rows[a]["since_low"], rows[a]["since_high"]) == (at(1), at(2))
    assert (rows[a]["since_low_scan"], rows[a]["since_high_scan"]) == (2, 3)
    assert rows[a]["state_scans"] == 2  # the error answer is no scan of the spell
    assert rows[a]["last_online_at"] == at(1)
    assert rows[a]["last_status"] == "offline"
    # b: offline, error, offline, online, missing -> online since (day 2, day 3]
    assert (rows[b]["state"], rows[b]["since_low"], rows[b]["since_high"]) == (
        "online",
        at(2),
        at(3),
    )
    assert rows[b]["state_scans"] == 1
    assert rows[b]["last_scan_id"] == 4
    # c: error first (no state yet), offline twice, then online
    assert (rows[c]["state"], rows[c]["since_low"], rows[c]["since_high"]) == (
        "online",
        at(3),
        at(4),
    )
    # d: never a definite answer
    assert rows[d]["state"] is None
    assert rows[d]["last_status"] == "invalid"
    assert rows[d]["first_scan_id"] == 1
    assert transitions(db) == [
        (3, a, "online", "offline", at(1), at(2)),
        (4, b, "offline", "online", at(2), at(3)),
        (5, c, "offline", "online", at(3), at(4)),
    ]


def test_each_scan_row_counts_its_answers_and_its_cost(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    record_scan(
        db,
        0,
        {"GID_a@@@1": "online", "GID_a@@@2": "offline", "GID_b@@@3": "error", "x": "invalid"},
        calls_sent=9,
        calls_succeeded=7,
        calls_throttled=2,
    )
    conn = open_database(db)
    scan = conn.execute(
        "SELECT ids_online, ids_offline, ids_error, ids_invalid, calls_sent, "
        "billable_transactions, calls_throttled, duration_seconds, outcome FROM scans"
    ).fetchall()
    groups = conn.execute("SELECT * FROM scan_groups ORDER BY grp").fetchall()
    conn.close()
    assert scan == [(1, 1, 1, 1, 9, 7, 2, 600.0, "completed")]
    assert groups == [(1, "(none)", 0, 0, 0, 1), (1, "GID_a", 1, 1, 0, 0), (1, "GID_b", 0, 0, 1, 0)]


def test_the_recorder_writes_off_the_callers_thread(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    open_database(db).close()
    recorder = HistoryRecorder(db, batch_size=2)
    # Another writer holds the database: whatever writes must wait for it. The
    # caller's begin() and record() return anyway, because they only queue.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        recorder.begin(instance_id="i", mode="single", output=None)
        for n in range(5):
            recorder.record(
                Record(
                    client_id=f"GID_a@@@{n}",
                    instance_id="i",
                    status=Status.ONLINE,
                    checked_at=datetime.now(UTC),
                )
            )
        assert blocker.execute("SELECT count(*) FROM devices").fetchone() == (0,)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    row = recorder.end(summary_for(T0))
    recorder.close()
    assert row.ids_online == 5
    assert len(devices(db)) == 5


def pending(db: Path) -> list[str]:
    conn = open_database(db)
    try:
        return [r[0] for r in conn.execute("SELECT client_id FROM pending ORDER BY 1")]
    finally:
        conn.close()


def test_answers_are_on_disk_within_a_second_and_in_the_devices_at_the_end(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fleet.db"
    clock = FakeClock(0.0)
    recorder = HistoryRecorder(db, batch_size=1000, hand_over_seconds=1.0, clock=clock)
    recorder.begin(instance_id="i", mode="single", output=None)

    def answer(n: int) -> None:
        recorder.record(
            Record(
                client_id=f"GID_a@@@{n}",
                instance_id="i",
                status=Status.ONLINE,
                checked_at=datetime.now(UTC),
            )
        )

    answer(0)
    answer(1)
    clock.advance(1.0)
    answer(2)  # a second after the last hand-over: these three go to the writer
    answer(3)  # this one waits for the next
    deadline = time.monotonic() + 30
    while len(pending(db)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pending(db) == ["GID_a@@@0", "GID_a@@@1", "GID_a@@@2"]
    assert devices(db) == {}  # merged when the scan ends
    recorder.end(summary_for(T0))
    recorder.close()
    assert len(devices(db)) == 4
    assert pending(db) == []


def test_a_scan_that_died_is_merged_before_the_next_one(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    recorder = HistoryRecorder(db, batch_size=1)
    recorder.begin(instance_id="i", mode="single", output=None, started_at=T0)
    recorder.record(
        Record(
            client_id="GID_a@@@1",
            instance_id="i",
            status=Status.ONLINE,
            checked_at=T0 + timedelta(seconds=1),
        )
    )
    recorder.close()  # no end(): the process died
    record_scan(db, 1, {"GID_a@@@1": "offline"})
    row = devices(db)["GID_a@@@1"]
    assert (row["since_low"], row["since_high"]) == (at(0), at(1))
    assert [r[:5] for r in scan_rows(db)] == [(1, 1, 1, 0, 0), (2, 1, 0, 1, 0)]
    assert pending(db) == []


def test_two_dead_scans_one_resumed_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    outputs = {"a": str(tmp_path / "a.ndjson"), "b": str(tmp_path / "b.ndjson")}
    for day, (name, status) in enumerate((("a", Status.ONLINE), ("b", Status.OFFLINE))):
        recorder = HistoryRecorder(db, batch_size=1)
        recorder.begin(instance_id="i", mode="single", output=outputs[name])
        for n in range(3):
            recorder.record(
                Record(
                    client_id=f"GID_{name}xxxxx@@@{n}",
                    instance_id="i",
                    status=status,
                    checked_at=T0 + timedelta(days=day, seconds=n),
                )
            )
        recorder.close()  # both died before their end
    # Resuming a: b is merged first (with a's answers still pending), then a at its end.
    recorder = HistoryRecorder(db)
    recorder.begin(instance_id="i", mode="single", output=outputs["a"], resume=True)
    recorder.end(summary_for(T0))
    recorder.close()
    rows = devices(db)
    assert {c: (r["state"], r["last_scan_id"]) for c, r in rows.items()} == {
        **{f"GID_axxxxx@@@{n}": ("online", 1) for n in range(3)},
        **{f"GID_bxxxxx@@@{n}": ("offline", 2) for n in range(3)},
    }
    assert [r[:4] for r in scan_rows(db)] == [(1, 2, 3, 0), (2, 1, 0, 3)]
    assert pending(db) == []


# --- the schema ----------------------------------------------------------------------------


def test_a_version_1_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = open_database(db, target=1)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute(
        "INSERT INTO scans (started_at, ended_at, instance_id, mode, output, ids_online) "
        "VALUES ('2026-10-01T02:00:00.000Z', '2026-10-01T02:10:00.000Z', 'mqtt-cn-x', "
        "'single', NULL, 1)"
    )
    conn.execute(
        "INSERT INTO devices VALUES ('GID_a@@@1', 'GID_a', 'online', NULL, NULL, "
        "'2026-10-01T02:00:01.000Z', 1, 1, '2026-10-01T02:00:01.000Z', 1, "
        "'2026-10-01T02:00:01.000Z', 'online', '2026-10-01T02:00:01.000Z', 1, 1)"
    )
    conn.close()
    migrated: list[tuple[int, int]] = []
    conn = open_database(db, on_migrate=lambda a, b: migrated.append((a, b)))
    assert migrated == [(1, 2)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert conn.execute("SELECT outcome, calls_sent, runs FROM scans").fetchall() == [
        ("completed", 0, 1)
    ]
    assert conn.execute("SELECT * FROM scan_groups").fetchall() == [(1, "GID_a", 1, 0, 0, 0)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # And the migrated file records the next scan on top of the old one.
    record_scan(db, 40, {"GID_a@@@1": "offline"})
    row = devices(db)["GID_a@@@1"]
    assert (row["since_low"], row["since_high"]) == ("2026-10-01T02:00:01.000Z", at(40))


def test_every_migration_step_is_listed() -> None:
    assert sorted(MIGRATIONS) == list(range(SCHEMA_VERSION))


def test_files_that_are_not_our_history_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}").connection.close()
    with pytest.raises(HistoryError, match="newer than this fleetscan"):
        open_database(newer)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(HistoryError, match="not a fleetscan history"):
        open_database(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(HistoryError, match="not a history database"):
        open_database(garbage)
    with pytest.raises(HistoryError, match="no such history"):
        open_database(tmp_path / "missing.db", create=False)


# --- against the emulator, with churn ------------------------------------------------------


@dataclass
class Truth:
    """What the test expects of one device, walked from its answers in scan order."""

    state: str | None = None
    since_low: str | None = None
    since_high: str | None = None
    seen_at: str | None = None
    last_online: str | None = None
    scans: int = 0
    transitions: list[tuple[Any, ...]] = field(default_factory=list)

    def answer(self, scan_id: int, status: str, when: str, client_id: str) -> None:
        if status not in ("online", "offline"):
            return
        if status != self.state:
            if self.state is not None:
                self.transitions.append(
                    (scan_id, client_id, self.state, status, self.seen_at, when)
                )
            self.state, self.since_low, self.since_high, self.scans = (
                status,
                self.seen_at,
                when,
                1,
            )
        else:
            self.scans += 1
        self.seen_at = when
        if status == "online":
            self.last_online = when


@pytest.fixture
def churning() -> Iterator[tuple[ThreadedEmulator, FakeClock]]:
    # The fleet's clock moves only between scans: within one, every answer is the
    # status at that instant. Steps stay far inside the 15-minute signature window.
    clock = FakeClock(time.time())
    config = EmulatorConfig(limits=ROOMY, churn_rate=0.01, faults=Faults(error_rate=0.05))
    with run_emulator_in_thread(config, clock=clock) as emulator:
        yield emulator, clock


def read_records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_sequence_of_scans_with_churn_records_since_bounds_and_transitions(
    tmp_path: Path,
    churning: tuple[ThreadedEmulator, FakeClock],
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    emu, clock = churning
    rng = random.Random(7)
    fleet = [f"GID_churn{g}@@@dev-{i}" for g in range(3) for i in range(120)]
    db = tmp_path / "fleet.db"
    truth: dict[str, Truth] = {cid: Truth() for cid in fleet}
    changed_between_scans = 0
    for scan_id in range(1, 6):
        if scan_id > 1:
            clock.advance(60.0)  # ~60% of the fleet redrawn, ~30% changed
        subset = [cid for cid in fleet if rng.random() < 0.9]  # some IDs missing
        ids_file = tmp_path / f"ids{scan_id}.txt"
        ids_file.write_text("".join(f"{c}\n" for c in [*subset, "GID_bad@@@not ok"]))
        out = tmp_path / f"scan{scan_id}.ndjson"
        code = main(
            [
                "scan",
                "--endpoint",
                emu.url,
                "--instance-id",
                DEFAULT_INSTANCE_ID,
                "--max-attempts",
                "1",
                "--quiet",
                str(ids_file),
                "-o",
                str(out),
                "--history",
                str(db),
            ]
        )
        capsysbinary.readouterr()
        assert code in (0, 1)
        records = read_records(out)
        assert any(r["status"] == "error" for r in records)  # faults did their part
        for r in records:
            cid = r["client_id"]
            if r["status"] in ("online", "offline"):
                # The emulator's truth at that instant, not what fleetscan believes.
                assert (r["status"] == "online") is emu.fleet.is_online(cid)
            if cid in truth:
                before = truth[cid].state
                truth[cid].answer(scan_id, r["status"], r["checked_at"], cid)
                changed_between_scans += before is not None and truth[cid].state != before
    assert changed_between_scans > 50  # the churn really changed things
    rows = devices(db)
    for cid, expected in truth.items():
        row = rows[cid]
        assert row["state"] == expected.state, cid
        assert row["since_low"] == expected.since_low, cid
        assert row["since_high"] == expected.since_high, cid
        assert row["state_scans"] == expected.scans, cid
        assert row["last_online_at"] == expected.last_online, cid
    assert rows["GID_bad@@@not ok"]["last_status"] == "invalid"
    expected_transitions = sorted(t for d in truth.values() for t in d.transitions)
    assert transitions(db) == expected_transitions
    conn = open_database(db)
    scans = conn.execute("SELECT id, ids_online, ids_offline, ids_error FROM scans").fetchall()
    conn.close()
    assert [s[0] for s in scans] == [1, 2, 3, 4, 5]
    last = read_records(tmp_path / "scan5.ndjson")
    assert scans[-1][1:] == tuple(
        sum(r["status"] == s for r in last) for s in ("online", "offline", "error")
    )


# --- resumed scans ---------------------------------------------------------------------------


@pytest.fixture
def faulty() -> Iterator[ThreadedEmulator]:
    config = EmulatorConfig(limits=ROOMY, faults=Faults(error_rate=0.2))
    with run_emulator_in_thread(config) as emulator:
        yield emulator


def scan_args(emu: ThreadedEmulator, ids_file: Path, out: Path, *more: str) -> list[str]:
    return [
        "scan",
        "--endpoint",
        emu.url,
        "--instance-id",
        DEFAULT_INSTANCE_ID,
        "--max-attempts",
        "1",
        "--quiet",
        str(ids_file),
        "-o",
        str(out),
        *more,
    ]


def scan_rows(db: Path) -> list[tuple[Any, ...]]:
    conn = open_database(db)
    try:
        return conn.execute(
            "SELECT id, runs, ids_online, ids_offline, ids_error, calls_sent, outcome FROM scans"
        ).fetchall()
    finally:
        conn.close()


def test_a_resumed_scan_is_recorded_once(
    tmp_path: Path, faulty: ThreadedEmulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ids_file = tmp_path / "ids.txt"
    fleet = [f"GID_res@@@dev-{i}" for i in range(200)]
    ids_file.write_text("".join(f"{c}\n" for c in fleet))
    out, db = tmp_path / "tonight.ndjson", tmp_path / "fleet.db"
    codes = [main(scan_args(faulty, ids_file, out, "--history", str(db)))]
    while codes[-1] == 1 and len(codes) < 12:
        codes.append(main(scan_args(faulty, ids_file, out, "--history", str(db), "--resume")))
    capsysbinary.readouterr()
    assert codes[0] == 1
    assert codes[-1] == 0
    assert len(codes) > 1
    records = read_records(out)
    assert len(records) == len(fleet)
    ((scan_id, runs, online, offline, errors, calls, outcome),) = scan_rows(db)
    assert (scan_id, runs, errors, outcome) == (1, len(codes), 0, "completed")
    assert (online, offline) == (
        sum(r["status"] == "online" for r in records),
        sum(r["status"] == "offline" for r in records),
    )
    assert calls == faulty.stats().requests, "every run's calls, added up"
    rows = devices(db)
    assert set(rows) == set(fleet)
    # One scan, each device seen by it once, however many runs it took.
    assert {r["state_scans"] for r in rows.values()} == {1}
    assert {r["last_scan_id"] for r in rows.values()} == {1}
    # The next night's scan, into the same file without --resume, is a scan of its own.
    assert main(scan_args(faulty, ids_file, out, "--history", str(db))) in (0, 1)
    assert [r[0] for r in scan_rows(db)] == [1, 2]


def test_a_resume_records_what_the_killed_run_wrote_but_never_committed(
    tmp_path: Path, faulty: ThreadedEmulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ids_file = tmp_path / "ids.txt"
    fleet = [f"GID_res@@@dev-{i}" for i in range(150)]
    ids_file.write_text("".join(f"{c}\n" for c in fleet))
    out, db = tmp_path / "tonight.ndjson", tmp_path / "fleet.db"
    assert main(scan_args(faulty, ids_file, out, "--history", str(db))) == 1
    # What a kill -9 between the file's write and the history's commit leaves: records
    # in the file the database never saw, and a scan row that never ended.
    lost = [r["client_id"] for r in read_records(out) if r["status"] != "error"][:40]
    conn = open_database(db)
    conn.executemany("DELETE FROM devices WHERE client_id = ?", [(c,) for c in lost])
    conn.execute("UPDATE scans SET outcome = NULL, ended_at = NULL")
    conn.close()
    code = 1
    for _ in range(10):
        code = main(scan_args(faulty, ids_file, out, "--history", str(db), "--resume"))
        if code == 0:
            break
    capsysbinary.readouterr()
    assert code == 0
    rows = devices(db)
    assert set(rows) == set(fleet)
    final = {r["client_id"]: r for r in read_records(out)}
    for cid in fleet:
        assert rows[cid]["last_status"] == final[cid]["status"]
        assert rows[cid]["last_checked_at"] == final[cid]["checked_at"]
        assert rows[cid]["state_scans"] == 1
    ((_, _, online, offline, errors, _, outcome),) = scan_rows(db)
    assert (online + offline, errors, outcome) == (len(fleet), 0, "completed")


@pytest.fixture
def slow() -> Iterator[ThreadedEmulator]:
    # A few ms per answer, so a kill lands with calls in flight and batches unsent.
    config = EmulatorConfig(limits=ROOMY, faults=Faults(latency_ms=2, jitter_ms=4))
    with run_emulator_in_thread(config) as emulator:
        yield emulator


def test_kill_9_then_resume_records_every_answer_once(
    tmp_path: Path, slow: ThreadedEmulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    fleet = [f"GID_kill@@@dev-{i}" for i in range(1500)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{c}\n" for c in fleet))
    out, db = tmp_path / "tonight.ndjson", tmp_path / "fleet.db"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    args = scan_args(slow, ids_file, out, "--history", str(db))
    for kill_at in (200, 700):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetscan", *args, *(["--resume"] if kill_at > 200 else [])],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= kill_at:
                break
            time.sleep(0.005)
        proc.kill()
        proc.wait()
    assert main([*args, "--resume"]) == 0
    capsysbinary.readouterr()
    final = {r["client_id"]: r for r in read_records(out)}
    assert set(final) == set(fleet)
    rows = devices(db)
    assert set(rows) == set(fleet)
    for cid in fleet:
        assert rows[cid]["last_status"] == final[cid]["status"], cid
        assert rows[cid]["last_checked_at"] == final[cid]["checked_at"], cid
        assert rows[cid]["state_scans"] == 1, cid
    ((scan_id, runs, online, offline, errors, _, outcome),) = scan_rows(db)
    assert (scan_id, runs, outcome) == (1, 3, "completed")
    assert (online + offline, errors) == (len(fleet), 0)


def test_a_resume_with_history_records_a_first_run_without_it(
    tmp_path: Path, faulty: ThreadedEmulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ids_file = tmp_path / "ids.txt"
    fleet = [f"GID_res@@@dev-{i}" for i in range(100)]
    ids_file.write_text("".join(f"{c}\n" for c in fleet))
    out, db = tmp_path / "tonight.ndjson", tmp_path / "fleet.db"
    assert main(scan_args(faulty, ids_file, out)) == 1
    code = 1
    for _ in range(10):
        code = main(scan_args(faulty, ids_file, out, "--history", str(db), "--resume"))
        if code == 0:
            break
    capsysbinary.readouterr()
    assert code == 0
    ((_, _, online, offline, errors, _, _),) = scan_rows(db)
    assert (online + offline, errors) == (len(fleet), 0)


def test_resuming_an_older_scan_never_overwrites_newer_answers(tmp_path: Path) -> None:
    db, old_output = tmp_path / "fleet.db", tmp_path / "monday.ndjson"
    old_output.write_bytes(
        b"".join(
            orjson.dumps({"client_id": cid, "status": status, "checked_at": at(0)}) + b"\n"
            for cid, status in (("GID_a@@@1", "online"), ("GID_a@@@2", "offline"))
        )
    )
    recorder = HistoryRecorder(db)
    recorder.begin(instance_id="i", mode="single", output=str(old_output), started_at=T0)
    recorder.import_file(old_output)
    recorder.end(summary_for(T0))
    recorder.close()
    record_scan(db, 1, {"GID_a@@@1": "offline", "GID_a@@@2": "online"})
    # Monday's file resumed after Tuesday's scan: its answers are older than what
    # the devices already hold, and change nothing.
    recorder = HistoryRecorder(db)
    recorder.begin(instance_id="i", mode="single", output=str(old_output), resume=True)
    recorder.import_file(old_output)
    recorder.end(summary_for(T0))
    recorder.close()
    rows = devices(db)
    assert {c: (r["state"], r["last_checked_at"]) for c, r in rows.items()} == {
        "GID_a@@@1": ("offline", at(1)),
        "GID_a@@@2": ("online", at(1)),
    }
    assert [r[:2] for r in scan_rows(db)] == [(1, 2), (2, 1)]


def test_an_unusable_history_stops_the_scan_before_any_call(
    tmp_path: Path, faulty: ThreadedEmulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("GID_a@@@1\n")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 200)
    code = main(scan_args(faulty, ids_file, tmp_path / "o.ndjson", "--history", str(bad)))
    assert code == 2
    assert "not a history database" in capsysbinary.readouterr().err.decode()
    assert faulty.stats().requests == 0


def test_a_newer_history_is_refused_before_any_call_or_write(
    tmp_path: Path, faulty: ThreadedEmulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("GID_a@@@1\n")
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}").connection.close()
    out = tmp_path / "o.ndjson"
    out.write_bytes(b"last night's records\n")
    code = main(scan_args(faulty, ids_file, out, "--history", str(newer)))
    assert code == 2
    assert "newer than this fleetscan" in capsysbinary.readouterr().err.decode()
    assert faulty.stats().requests == 0
    # The earlier output is as it was, and nothing was left beside it.
    assert out.read_bytes() == b"last night's records\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt", "newer.db", "o.ndjson"]


# --- the queries ---------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Path:
    db = tmp_path / "fleet.db"
    a, b, c, d = (f"GID_{g}@@@{n}" for g, n in (("x", "a"), ("x", "b"), ("y", "c"), ("y", "d")))
    record_scan(db, 0, {a: "online", b: "offline", c: "online", d: "online"})
    record_scan(db, 1, {a: "offline", b: "offline", c: "online", d: "online"})
    record_scan(db, 2, {a: "offline", b: "error", c: "online", d: "online"})
    record_scan(
        db, 3, {a: "offline", b: "offline", c: "offline", d: "online", "GID_y@@@e": "online"}
    )
    return db


def query(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> list[dict[str, Any]]:
    code = main(["history", *args])
    out = capsysbinary.readouterr().out
    assert code == 0
    return [orjson.loads(line) for line in out.splitlines()]


def test_offline_for_a_duration_or_a_number_of_scans(
    history: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    db = str(history)
    everyone = query(capsysbinary, db, "offline")
    assert [r["client_id"] for r in everyone] == ["GID_x@@@b", "GID_x@@@a", "GID_y@@@c"]
    b = everyone[0]
    assert b["offline_since_low"] is None
    assert b["offline_since_high"] == at(0)
    assert b["offline_scans"] == 3  # the error answer of day 2 did not count, nor end it
    # As of the last scan's end (day 3 + 10 min): a went offline after day 0, by day 1.
    a = everyone[1]
    assert (a["offline_since_low"], a["offline_since_high"]) == (at(0), at(1))
    assert a["offline_for_min_seconds"] == pytest.approx(2 * 86400 + 599, abs=1)
    assert a["offline_for_max_seconds"] == pytest.approx(3 * 86400 + 599, abs=1)
    assert [r["client_id"] for r in query(capsysbinary, db, "offline", "--for", "2d")] == [
        "GID_x@@@b",
        "GID_x@@@a",
    ]
    assert [r["client_id"] for r in query(capsysbinary, db, "offline", "--for", "2d1h")] == [
        "GID_x@@@b"
    ]
    assert [r["client_id"] for r in query(capsysbinary, db, "offline", "--scans", "3")] == [
        "GID_x@@@b",
        "GID_x@@@a",
    ]
    assert [r["client_id"] for r in query(capsysbinary, db, "offline", "--group", "GID_y")] == [
        "GID_y@@@c"
    ]


def test_changes_in_the_last_scan_and_between_two_times(
    history: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    db = str(history)
    last = query(capsysbinary, db, "changes")
    assert [(r["client_id"], r["before"], r["after"]) for r in last] == [
        ("GID_y@@@c", "online", "offline"),
        ("GID_y@@@e", None, "online"),
    ]
    assert last[0]["before_at"] == at(2)
    assert last[0]["at"] == at(3)
    ranged = query(
        capsysbinary, db, "changes", "--since", "2026-11-02", "--until", "2026-11-04T03:00:00Z"
    )
    assert [(r["scan_id"], r["client_id"]) for r in ranged] == [
        (2, "GID_x@@@a"),
        (4, "GID_y@@@c"),
        (4, "GID_y@@@e"),
    ]
    # Scans 2 and 3 started on 11-02 and 11-03; scan 3 changed no state (an error).
    before_4 = query(capsysbinary, db, "changes", "--since", "2026-11-02", "--until", "2026-11-04")
    assert [(r["scan_id"], r["client_id"]) for r in before_4] == [(2, "GID_x@@@a")]
    assert [r["client_id"] for r in query(capsysbinary, db, "changes", "--scan", "2")] == [
        "GID_x@@@a"
    ]


def test_per_group_online_share_over_the_scans(
    history: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    rows = query(capsysbinary, str(history), "groups", "--group", "GID_x")
    assert [(r["scan_id"], r["online"], r["offline"], r["error"]) for r in rows] == [
        (1, 1, 1, 0),
        (2, 0, 2, 0),
        (3, 0, 1, 1),
        (4, 0, 2, 0),
    ]
    assert [r["online_share"] for r in rows] == [0.5, 0.0, 0.0, 0.0]
    last_two = query(capsysbinary, str(history), "groups", "--last", "1")
    assert {(r["group"], r["online_share"]) for r in last_two} == {
        ("GID_x", 0.0),
        ("GID_y", round(2 / 3, 4)),
    }


def test_a_table_is_aligned_and_says_so_when_empty(
    history: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["history", str(history), "offline", "--format", "table"]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert lines[0].split()[:3] == ["client_id", "group", "offline_since_low"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + 3
    assert lines[2].startswith("GID_x@@@b")
    assert main(["history", str(history), "offline", "--for", "30d", "--format", "table"]) == 0
    assert capsysbinary.readouterr().out == b"(no rows)\n"


def test_a_bad_duration_and_a_missing_database_are_usage_errors(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["history", str(tmp_path / "x.db"), "offline", "--for", "soon"]) == 2
    assert "not a duration" in capsysbinary.readouterr().err.decode()
    assert main(["history", str(tmp_path / "x.db"), "scans"]) == 2
    assert "no such history database" in capsysbinary.readouterr().err.decode()
    assert not (tmp_path / "x.db").exists()


# --- a history that fails mid-scan -----------------------------------------------------------


def pending_answers(db: Path) -> int:
    """Answers of a running scan committed so far (0 before the history exists)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()


def test_a_history_that_fails_mid_scan_stops_the_scan_like_an_output_that_fails(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    fleet = [f"GID_hist@@@dev-{i}" for i in range(400)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{c}\n" for c in fleet))
    out, db, summary = tmp_path / "tonight.ndjson", tmp_path / "fleet.db", tmp_path / "s.json"
    with run_emulator_in_thread(EmulatorConfig(limits=ROOMY)) as emu:
        args = [
            *scan_args(emu, ids_file, out, "--history", str(db), "--summary", str(summary)),
            "--qps",
            "40",  # 10 s for the whole fleet: the failure comes well before its end
        ]
        args.remove("--quiet")  # the summary text too
        codes: list[int] = []
        scan = threading.Thread(target=lambda: codes.append(main(args)))
        scan.start()
        try:
            # Once the writer thread has committed answers, the database changes under
            # it: its next commit fails, as on a disk error or a corrupted file.
            deadline = time.monotonic() + 30
            while not pending_answers(db):
                assert time.monotonic() < deadline
                assert scan.is_alive()
                time.sleep(0.05)
            other = sqlite3.connect(db, timeout=30)
            other.execute("DROP TABLE pending")
            other.close()
        finally:
            scan.join(60)
        sent = emu.stats().requests
        err = capsysbinary.readouterr().err.decode()
        records = read_records(out)
        resumed = main(scan_args(emu, ids_file, out, "--resume"))
    assert codes == [4], err
    # One line says what failed and names the history; no traceback.
    (line,) = [x for x in err.splitlines() if x.startswith("fleetscan:") and str(db) in x]
    assert line.startswith(f"fleetscan: stopped: cannot record the scan in the history {db}: ")
    assert "no such table: pending" in line
    assert "Traceback" not in err
    # The summary, on stderr and in its file, with the reason.
    assert "fleetscan: output error" in err
    written = orjson.loads(summary.read_bytes())
    assert written["outcome"] == "output error"
    assert str(db) in written["abort_reason"]
    # The output: whole records, each ID once, one for every call sent; the scan
    # stopped early, and --resume finishes it, each ID once.
    assert len({r["client_id"] for r in records}) == len(records) == sent < len(fleet)
    assert resumed == 0
    assert sorted(r["client_id"] for r in read_records(out)) == sorted(fleet)


def test_the_history_sink_reports_its_writer_s_death_once_and_then_takes_no_records(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fleet.db"
    recorder = HistoryRecorder(db, batch_size=1)
    errors: list[OSError] = []
    sink = HistorySink(recorder, on_error=errors.append)

    def answer(cid: str) -> Record:
        return Record(client_id=cid, instance_id="mqtt-cn-x", status=Status.ONLINE, checked_at=T0)

    recorder.begin(instance_id="mqtt-cn-x", mode="single", output=None)
    sink.write(answer("GID_a@@@1"))
    deadline = time.monotonic() + 30
    while not pending_answers(db):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    other = sqlite3.connect(db, timeout=30)
    other.execute("DROP TABLE pending")
    other.close()
    sink.write(answer("GID_a@@@2"))  # a batch of one: its commit fails on the thread
    while not errors:
        assert time.monotonic() < deadline
        time.sleep(0.01)
        sink.flush()  # the scan's 100 ms flush finds the failure
    (error,) = errors
    assert isinstance(error, HistoryWriteError)
    assert error is sink.failure
    assert error.filename == str(db)
    assert error.strerror == "no such table: pending"
    # Then nothing raises and nothing is said again: the other sinks carry on.
    sink.write(answer("GID_a@@@3"))
    sink.flush(fsync=True)
    sink.close()
    assert len(errors) == 1
    # Without on_error, the failure is raised; the recorder's close says it too.
    with pytest.raises(HistoryWriteError, match="recording the scan failed"):
        HistorySink(recorder).flush()
    with pytest.raises(HistoryError, match="no such table"):
        recorder.close()
