"""``fleetscan diff``: against a truth the test builds on its own, shuffled, partitioned
into buckets or not, through the command line, and on files that are not scan outputs."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetscan.cli import main
from fleetscan.diff import diff_files

STATUSES = ("online", "offline", "error", "invalid")


def record(client_id: str, status: str, at: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "instance_id": "mqtt-cn-x",
        "status": status,
        "online": {"online": True, "offline": False}.get(status),
        "checked_at": at,
        "api": None if status == "invalid" else "QuerySessionByClientId",
        "request_id": None,
        "attempts": 1,
        "error": None,
    }


def write(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


def kind(before: str | None, after: str | None) -> str:
    # The documented kinds, written out again here rather than imported.
    if before is None:
        return "appeared"
    if after is None:
        return "disappeared"
    if after == "error":
        return "now_error"
    if (before, after) == ("online", "offline"):
        return "went_offline"
    if (before, after) == ("offline", "online"):
        return "came_online"
    return "other"


class Fleet:
    """Two scans of a random fleet, and the diff the documentation promises."""

    def __init__(self, seed: int, n: int = 3000) -> None:
        rng = random.Random(seed)
        self.old: dict[str, str] = {}
        self.new: dict[str, str] = {}
        old_records: list[dict[str, Any]] = []
        new_records: list[dict[str, Any]] = []
        for i in range(n):
            group = f"GID_group{i % 7}"
            cid = f"{group}@@@dev-{i}" if i % 97 else f"bad id {i}"  # some invalid ones
            present = rng.random()
            if present < 0.9 or cid.startswith("bad"):
                status = "invalid" if cid.startswith("bad") else rng.choice(STATUSES[:3])
                self.old[cid] = status
                old_records.append(record(cid, status, "2026-11-24T02:00:00.000Z"))
            if present > 0.05 or cid.startswith("bad"):
                status = "invalid" if cid.startswith("bad") else rng.choice(STATUSES[:3])
                self.new[cid] = status
                # A resumed-by-hand file: an error first, then the final record.
                if status != "error" and rng.random() < 0.05:
                    new_records.append(record(cid, "error", "2026-11-25T02:00:00.000Z"))
                new_records.append(record(cid, status, "2026-11-25T02:00:01.000Z"))
                # An error after a final one changes nothing either.
                if status != "error" and rng.random() < 0.02:
                    new_records.append(record(cid, "error", "2026-11-25T02:00:02.000Z"))
        rng.shuffle(old_records)
        rng.shuffle(new_records)
        self.old_records = old_records
        self.new_records = new_records

    def expected(self) -> dict[str, tuple[str | None, str | None]]:
        ids = set(self.old) | set(self.new)
        out = {}
        for cid in ids:
            before, after = self.old.get(cid), self.new.get(cid)
            if before != after:
                out[cid] = (before, after)
        return out


def run_diff(fleet: Fleet, tmp_path: Path, **kwargs: Any) -> tuple[list[dict[str, Any]], Any]:
    old = write(tmp_path / "old.ndjson", fleet.old_records)
    new = write(tmp_path / "new.ndjson", fleet.new_records)
    lines: list[bytes] = []
    summary = diff_files(old, new, emit=lines.append, **kwargs)
    return [orjson.loads(line) for line in lines], summary


@pytest.mark.parametrize("bucket_bytes", [None, 4096], ids=["in memory", "partitioned"])
def test_the_diff_lists_exactly_the_ids_whose_status_differs(
    tmp_path: Path, bucket_bytes: int | None
) -> None:
    fleet = Fleet(seed=12)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    extra = {"bucket_bytes": bucket_bytes, "tmp_dir": str(scratch)} if bucket_bytes else {}
    changes, summary = run_diff(fleet, tmp_path, **extra)
    expected = fleet.expected()
    got = {c["client_id"]: (c["before"], c["after"]) for c in changes}
    assert len(got) == len(changes), "an ID is listed twice"
    assert got == expected
    assert {kind(*v) for v in expected.values()} == set(Counter(kind(*v) for v in got.values()))
    for change in changes:
        assert change["change"] == kind(change["before"], change["after"])
        assert (change["before_checked_at"] is None) == (change["before"] is None)
        assert (change["after_checked_at"] is None) == (change["after"] is None)
        if change["after"] not in (None, "error"):
            assert change["after_checked_at"] == "2026-11-25T02:00:01.000Z"
    counts = Counter(kind(*v) for v in expected.values())
    assert summary.changes == {k: counts.get(k, 0) for k in summary.changes}
    assert summary.old_ids == len(fleet.old)
    assert summary.new_ids == len(fleet.new)
    assert summary.unchanged == len(set(fleet.old) & set(fleet.new)) - sum(
        1 for c in expected if c in fleet.old and c in fleet.new
    )
    per_group: dict[str, Counter[str]] = {}
    for cid, (before, after) in expected.items():
        group = cid.split("@@@")[0] if "@@@" in cid else "(none)"
        per_group.setdefault(group, Counter())[kind(before, after)] += 1
    assert {g: {k: v for k, v in c.items() if v} for g, c in summary.groups.items()} == {
        g: dict(c) for g, c in per_group.items()
    }
    if bucket_bytes:
        assert list(scratch.iterdir()) == []  # the bucket files are gone


def test_the_partitioned_diff_really_uses_buckets(tmp_path: Path) -> None:
    fleet = Fleet(seed=3, n=400)
    seen: list[int] = []
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def emit(line: bytes) -> None:
        seen.append(len(list(scratch.rglob("*.*"))))

    old = write(tmp_path / "old.ndjson", fleet.old_records)
    new = write(tmp_path / "new.ndjson", fleet.new_records)
    diff_files(old, new, emit=emit, bucket_bytes=2048, tmp_dir=str(scratch))
    # Bucket files existed while comparing, and were removed as each pair was done.
    assert max(seen) > 2
    assert min(seen) < max(seen)


def test_the_command_writes_changes_and_the_summary(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    old = write(
        tmp_path / "a.ndjson",
        [
            record("GID_a@@@1", "online", "2026-11-24T02:00:00.000Z"),
            record("GID_a@@@2", "offline", "2026-11-24T02:00:00.000Z"),
            record("GID_b@@@3", "online", "2026-11-24T02:00:00.000Z"),
            record("GID_b@@@4", "online", "2026-11-24T02:00:00.000Z"),
        ],
    )
    new = write(
        tmp_path / "b.ndjson",
        [
            record("GID_b@@@5", "offline", "2026-11-25T02:00:00.000Z"),
            record("GID_b@@@3", "error", "2026-11-25T02:00:00.000Z"),
            record("GID_a@@@2", "online", "2026-11-25T02:00:00.000Z"),
            record("GID_a@@@1", "offline", "2026-11-25T02:00:00.000Z"),
        ],
    )
    out, summary = tmp_path / "changes.ndjson", tmp_path / "summary.json"
    code = main(["diff", old, new, "-o", str(out), "--summary", str(summary)])
    err = capsysbinary.readouterr().err.decode()
    assert code == 0
    changes = {c["client_id"]: c for c in map(orjson.loads, out.read_bytes().splitlines())}
    assert {k: (c["before"], c["after"]) for k, c in changes.items()} == {
        "GID_a@@@1": ("online", "offline"),
        "GID_a@@@2": ("offline", "online"),
        "GID_b@@@3": ("online", "error"),
        "GID_b@@@4": ("online", None),
        "GID_b@@@5": (None, "offline"),
    }
    assert changes["GID_b@@@4"]["before_checked_at"] == "2026-11-24T02:00:00.000Z"
    assert changes["GID_b@@@4"]["after_checked_at"] is None
    document = orjson.loads(summary.read_bytes())
    assert document["went_offline"] == 1
    assert document["came_online"] == 1
    assert document["appeared"] == 1
    assert document["disappeared"] == 1
    assert document["now_error"] == 1
    assert document["changed"] == 5
    assert document["groups"]["GID_a"]["went_offline"] == 1
    assert document["groups"]["GID_b"]["disappeared"] == 1
    assert "went offline 1, came online 1, appeared 1, disappeared 1, now error 1" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"client_id": "GID_a@@@1", "status": "online"}\nnot json\n', "b.ndjson:2: not a"),
        (b'{"client_id": "GID_a@@@1", "status": "maybe"}\n', "b.ndjson:1: a record needs"),
        (b'{"client_id": "GID_a@@@1", "status": "online"}\n{"client_id": "GID_', "torn last"),
        (b"[1, 2]\n", "b.ndjson:1: not a"),
    ],
)
def test_a_file_that_is_not_a_scan_output_is_named_with_its_line(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], content: bytes, message: str
) -> None:
    old = write(tmp_path / "a.ndjson", [record("GID_a@@@1", "online", "2026-11-24T02:00:00Z")])
    bad = tmp_path / "b.ndjson"
    bad.write_bytes(content)
    code = main(["diff", old, str(bad)])
    assert code == 2
    assert message in capsysbinary.readouterr().err.decode()


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    old = write(tmp_path / "a.ndjson", [])
    assert main(["diff", old, str(tmp_path / "nope.ndjson")]) == 2
    assert "nope.ndjson: cannot open" in capsysbinary.readouterr().err.decode()
