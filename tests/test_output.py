"""RecordWriter and resuming from a crashed run's output file."""

from __future__ import annotations

import io
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetscan.errors import InputError
from fleetscan.output import RecordWriter, count_records, prepare_resume
from fleetscan.records import Record, Status

WHEN = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def record(client_id: str, status: Status = Status.ONLINE) -> Record:
    error = {"code": "Timeout", "message": "slow", "http_status": None}
    return Record(
        client_id=client_id,
        instance_id="mqtt-cn-test",
        status=status,
        checked_at=WHEN,
        api="QuerySessionByClientId",
        attempts=1,
        error=error if status is Status.ERROR else None,
    )


def line(client_id: str, status: Status = Status.ONLINE) -> bytes:
    return record(client_id, status).to_json()


def ids_in(path: Path) -> list[tuple[str, str]]:
    rows = [orjson.loads(raw) for raw in path.read_bytes().splitlines()]
    return [(r["client_id"], r["status"]) for r in rows]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# RecordWriter


def test_writer_buffers_until_flush() -> None:
    out = io.BytesIO()
    writer = RecordWriter(out, clock=FakeClock())
    writer.write(record("GID_a@@@1"))
    writer.write(record("GID_a@@@2", Status.OFFLINE))
    assert out.getvalue() == b""
    assert (writer.pending, writer.written) == (2, 0)
    writer.flush()
    assert out.getvalue() == line("GID_a@@@1") + line("GID_a@@@2", Status.OFFLINE)
    assert (writer.pending, writer.written) == (0, 2)
    writer.flush()  # nothing pending: nothing written twice
    assert out.getvalue().count(b"\n") == 2


def test_writer_flushes_when_the_buffer_gets_old() -> None:
    out = io.BytesIO()
    clock = FakeClock()
    writer = RecordWriter(out, flush_interval=0.5, clock=clock)
    writer.write(record("GID_a@@@1"))
    clock.now += 0.25
    writer.write(record("GID_a@@@2"))
    assert out.getvalue() == b""
    clock.now += 0.25
    writer.write(record("GID_a@@@3"))
    assert out.getvalue().count(b"\n") == 3
    # The age counts from the oldest buffered record, not the last flush.
    clock.now += 10
    writer.write(record("GID_a@@@4"))
    assert out.getvalue().count(b"\n") == 3
    clock.now += 0.5
    writer.write(record("GID_a@@@5"))
    assert out.getvalue().count(b"\n") == 5


def test_writer_flushes_when_the_buffer_gets_big() -> None:
    out = io.BytesIO()
    size = len(line("GID_a@@@1"))
    writer = RecordWriter(out, flush_bytes=3 * size, clock=FakeClock())
    writer.write(record("GID_a@@@1"))
    writer.write(record("GID_a@@@2"))
    assert out.getvalue() == b""
    writer.write(record("GID_a@@@3"))
    assert out.getvalue().count(b"\n") == 3


class Trickle(io.RawIOBase):
    """A raw stream that accepts at most 7 bytes per write."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(memoryview(b))[:7]  # type: ignore[arg-type]
        self.data += chunk
        self.calls += 1
        return len(chunk)


def test_writer_completes_partial_writes() -> None:
    raw = Trickle()
    writer = RecordWriter(raw, clock=FakeClock())  # type: ignore[arg-type]
    writer.write(record("GID_a@@@1"))
    writer.flush()
    assert bytes(raw.data) == line("GID_a@@@1")
    assert raw.calls > 1


def test_writer_appends_to_a_file_and_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(line("GID_a@@@0"))
    with path.open("ab") as f:
        writer = RecordWriter(f, clock=FakeClock())
        writer.write(record("GID_a@@@1"))
        writer.flush(fsync=True)
        assert ids_in(path) == [("GID_a@@@0", "online"), ("GID_a@@@1", "online")]


def test_writer_fsync_on_a_pipe_is_harmless() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as w, os.fdopen(read_fd, "rb") as r:
        writer = RecordWriter(w, clock=FakeClock())
        writer.write(record("GID_a@@@1"))
        writer.flush(fsync=True)
        assert r.readline() == line("GID_a@@@1")


# prepare_resume


def test_resume_missing_file_is_a_fresh_start(tmp_path: Path) -> None:
    state = prepare_resume(tmp_path / "none.ndjson")
    assert state.carried_over == 0
    assert list(state.final_ids()) == []
    assert len(state.seen) == 0
    assert not (tmp_path / "none.ndjson").exists()


def test_resume_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(b"")
    state = prepare_resume(path)
    assert (state.carried_over, state.torn_bytes, state.rewritten) == (0, 0, False)
    assert path.read_bytes() == b""


def test_resume_clean_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    data = line("GID_a@@@1") + line("GID_a@@@2", Status.OFFLINE) + line("bad id", Status.INVALID)
    path.write_bytes(data)
    before = path.stat().st_ino
    state = prepare_resume(path)
    assert (state.online, state.offline, state.invalid) == (1, 1, 1)
    assert state.carried_over == 3
    assert not state.rewritten
    assert path.read_bytes() == data
    assert path.stat().st_ino == before
    assert "GID_a@@@1" in state.seen
    assert "bad id" in state.seen
    assert "GID_a@@@3" not in state.seen
    assert state.instance_ids == frozenset({"mqtt-cn-test"})


@pytest.mark.parametrize("cut", [1, 10, 40, -1])
def test_resume_cuts_a_torn_last_line(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "out.ndjson"
    good = line("GID_a@@@1") + line("GID_a@@@2")
    torn = line("GID_a@@@3")[:cut]
    path.write_bytes(good + torn)
    state = prepare_resume(path)
    assert state.torn_bytes == len(torn)
    assert path.read_bytes() == good
    assert state.carried_over == 2
    assert "GID_a@@@3" not in state.seen


def test_resume_cuts_an_unparseable_last_line_with_newline(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    good = line("GID_a@@@1")
    path.write_bytes(good + b'{"client_id": "GID_a@@@2", "sta\n\n')
    state = prepare_resume(path)
    assert path.read_bytes() == good
    assert state.torn_bytes > 0


def test_resume_cuts_a_zero_filled_tail(tmp_path: Path) -> None:
    # What a power loss can leave: the file's size was updated, its data was not.
    path = tmp_path / "out.ndjson"
    good = line("GID_a@@@1")
    path.write_bytes(good + b"\0" * 4096)
    assert prepare_resume(path).torn_bytes == 4096
    assert path.read_bytes() == good
    path.write_bytes(good + b"\0" * (2 * 1024 * 1024))  # longer than any record
    assert prepare_resume(path).torn_bytes == 2 * 1024 * 1024
    assert path.read_bytes() == good


def test_resume_drops_errors_and_duplicates_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(
        line("GID_a@@@1", Status.ERROR)
        + line("GID_a@@@2", Status.OFFLINE)
        + line("GID_a@@@1")
        + line("GID_a@@@2")  # a duplicate: the first final record wins
        + line("GID_a@@@3", Status.ERROR)
        + line("GID_a@@@4")[:20]  # and a torn tail
    )
    path.chmod(0o640)
    state = prepare_resume(path)
    assert ids_in(path) == [("GID_a@@@2", "offline"), ("GID_a@@@1", "online")]
    assert state.rewritten
    assert (state.dropped_errors, state.dropped_duplicates) == (2, 1)
    assert (state.online, state.offline, state.carried_over) == (1, 1, 2)
    assert state.torn_bytes == 20
    assert "GID_a@@@3" not in state.seen
    assert "GID_a@@@1" in state.seen
    assert list(state.final_ids()) == ["GID_a@@@2", "GID_a@@@1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["out.ndjson"]  # no temp file left
    # A second resume finds nothing to do.
    again = prepare_resume(path)
    assert not again.rewritten
    assert again.carried_over == 2


def test_resume_then_append_gives_each_id_once(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(line("GID_a@@@1") + line("GID_a@@@2", Status.ERROR) + line("GID_a@@@3")[:9])
    state = prepare_resume(path)
    with path.open("ab") as f:
        writer = RecordWriter(f)
        for client_id in ["GID_a@@@1", "GID_a@@@2", "GID_a@@@3"]:
            if state.seen.add(client_id):
                writer.write(record(client_id, Status.OFFLINE))
        writer.flush()
    assert ids_in(path) == [
        ("GID_a@@@1", "online"),
        ("GID_a@@@2", "offline"),
        ("GID_a@@@3", "offline"),
    ]


def test_resume_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    data = line("GID_a@@@1") + b'{"client_id": "x", "sta\n' + line("GID_a@@@2")
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        prepare_resume(path)
    assert (info.value.source, info.value.line) == (str(path), 2)
    assert path.read_bytes() == data  # untouched


def test_resume_bad_line_in_the_middle_of_a_rewrite_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    data = line("GID_a@@@1", Status.ERROR) + line("GID_a@@@2") + b"garbage\n" + line("GID_a@@@3")
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        prepare_resume(path)
    assert info.value.line == 3
    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == ["out.ndjson"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GID_a@@@1\nGID_a@@@2\n", "not a fleetscan"),
        (b"GID_a@@@1", "not a fleetscan"),
        (b'{"client_id": "x"}\n', "client_id and a status"),
        (b'{"client_id": "x", "status": "maybe"}\n', "unknown status"),
        (b"[1, 2]\n", "not a fleetscan"),
    ],
)
def test_resume_refuses_what_is_not_fleetscan_output(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        prepare_resume(path)
    assert info.value.line == 1
    assert path.read_bytes() == content


def test_resume_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        prepare_resume(tmp_path)


def test_resume_blank_lines_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(line("GID_a@@@1") + b"\n\r\n" + line("GID_a@@@2"))
    assert prepare_resume(path).carried_over == 2


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(list(Status))),
        max_size=12,
    ),
    cut=st.integers(0, 200),
)
def test_resume_round_trip(
    tmp_path_factory: pytest.TempPathFactory, events: list[tuple[str, Status]], cut: int
) -> None:
    # Whatever a run wrote, cut anywhere in its last record: after resume each ID is
    # there at most once, with its first final status, and no error records remain.
    path = tmp_path_factory.mktemp("resume") / "out.ndjson"
    lines = [line(f"GID_a@@@{cid}", status) for cid, status in events]
    if lines:
        lines[-1] = lines[-1][: min(cut, len(lines[-1]))]
    path.write_bytes(b"".join(lines))
    state = prepare_resume(path)
    expected: dict[str, str] = {}
    for cid, status in events[:-1]:
        if status is not Status.ERROR:
            expected.setdefault(f"GID_a@@@{cid}", status.value)
    if events and cut >= len(line(f"GID_a@@@{events[-1][0]}", events[-1][1])):
        cid, status = events[-1]
        if status is not Status.ERROR:
            expected.setdefault(f"GID_a@@@{cid}", status.value)
    assert ids_in(path) == list(expected.items())
    assert state.carried_over == len(expected)
    assert all(cid in state.seen for cid in expected)


# --- count_records: the previous scan's statuses, for the estimate ------------------------


def test_count_records_counts_each_status_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "last.ndjson"
    confirmed = orjson.loads(line("c1"))
    confirmed["confirmed"] = True
    data = (
        line("a")
        + line("b", Status.OFFLINE)
        + line("c", Status.OFFLINE)
        + orjson.dumps(confirmed)
        + b"\n"
        + line("d", Status.INVALID)
        + line("e", Status.ERROR)
        + line("a")  # a repeat counts again: nothing is kept per ID
        + line("torn")[:25]  # the crashed scan's last line
    )
    path.write_bytes(data)
    counts = count_records(path)
    assert (counts.online, counts.offline, counts.invalid, counts.errors) == (3, 2, 1, 1)
    assert counts.confirmed_online == 1
    assert path.read_bytes() == data  # nothing repaired, nothing cut


def test_count_records_names_the_file_and_line_of_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "last.ndjson"
    path.write_bytes(line("a") + b'{"client_id": "b"}\n' + line("c"))
    with pytest.raises(InputError, match=r"last\.ndjson:2: a record needs a client_id"):
        count_records(path)
    path.write_bytes(line("a") + b"not json\n" + line("c"))
    with pytest.raises(InputError, match=r"last\.ndjson:2: not a fleetscan NDJSON record"):
        count_records(path)
    with pytest.raises(InputError, match="cannot open"):
        count_records(tmp_path / "missing.ndjson")
