"""Reading client IDs from text, CSV, gzip and stdin."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import queue
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetscan.errors import InputError
from fleetscan.inputs import MAX_LINE_BYTES, InputRow, read_client_ids


def ids(sources: list[str], **kwargs: object) -> list[str]:
    return [row.client_id for row in read_client_ids(sources, **kwargs)]  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    if name.lower().endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def input_error(sources: list[str], **kwargs: object) -> InputError:
    with pytest.raises(InputError) as info:
        ids(sources, **kwargs)
    return info.value


# Plain text


def test_text_strips_bom_whitespace_crlf_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path, "ids.txt", b"\xef\xbb\xbfGID_a@@@1\r\n\r\n  GID_a@@@2 \t\r\n\n\nGID_a@@@3"
    )
    rows = list(read_client_ids([path]))
    assert [r.client_id for r in rows] == ["GID_a@@@1", "GID_a@@@2", "GID_a@@@3"]
    assert [r.line for r in rows] == [1, 3, 6]
    assert rows[0] == InputRow(source=path, line=1, client_id="GID_a@@@1")


def test_text_keeps_case_and_inner_spaces(tmp_path: Path) -> None:
    # An ID with spaces inside is not an input error: validation rejects it later.
    path = write(tmp_path, "ids", b"GID_a@@@Dev\nGID_a@@@dev\n GID_a@@@d e v \n")
    assert ids([path]) == ["GID_a@@@Dev", "GID_a@@@dev", "GID_a@@@d e v"]


def test_text_yields_invalid_ids_as_they_are(tmp_path: Path) -> None:
    long_id = "GID_a@@@" + "x" * 100
    path = write(tmp_path, "ids.txt", f"a/b\nc:d\n{long_id}\ne%f,g\n".encode())
    assert ids([path]) == ["a/b", "c:d", long_id, "e%f,g"]


def test_several_sources_in_order_with_their_names(tmp_path: Path) -> None:
    first = write(tmp_path, "a.txt", b"GID_a@@@1\n")
    second = write(tmp_path, "b.csv", b"client_id\nGID_a@@@2\n")
    rows = list(read_client_ids([first, second]))
    assert [(r.source, r.line, r.client_id) for r in rows] == [
        (first, 1, "GID_a@@@1"),
        (second, 2, "GID_a@@@2"),
    ]


def test_empty_file_yields_nothing(tmp_path: Path) -> None:
    assert ids([write(tmp_path, "empty.txt", b"")]) == []


# CSV


def test_csv_picks_client_id_column_and_handles_quotes(tmp_path: Path) -> None:
    data = (
        b'name,ClientId,note\r\n"Smith, J",GID_a@@@1,"said ""hi"""\r\n'
        b'x,"GID_a@@@2",y\r\n,,\r\n\r\nz," GID_a@@@3 ",w\r\n'
    )
    path = write(tmp_path, "fleet.csv", data)
    rows = list(read_client_ids([path]))
    assert [r.client_id for r in rows] == ["GID_a@@@1", "GID_a@@@2", "GID_a@@@3"]
    assert [r.line for r in rows] == [2, 3, 6]


@pytest.mark.parametrize("header", ["client_id", "ClientId", "clientId"])
def test_csv_known_id_column_names(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, "f.csv", f"other,{header}\nx,GID_a@@@1\n".encode())
    assert ids([path]) == ["GID_a@@@1"]


def test_csv_defaults_to_first_column(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b"\xef\xbb\xbfdevice,other\nGID_a@@@1,x\n")
    assert ids([path]) == ["GID_a@@@1"]


def test_csv_named_column(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b"client_id,dev\nwrong,GID_a@@@1\n")
    assert ids([path], column="dev") == ["GID_a@@@1"]


def test_csv_quoted_field_with_newline_reports_start_line(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b'id,note\nGID_a@@@1,"two\nlines"\nGID_a@@@2,x\n')
    rows = list(read_client_ids([path]))
    assert [(r.line, r.client_id) for r in rows] == [(2, "GID_a@@@1"), (4, "GID_a@@@2")]


def test_csv_empty_id_field_is_yielded_for_validation(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b"client_id,name\n,bob\n")
    assert ids([path]) == [""]


def test_csv_missing_named_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b"device, group\nGID_a@@@1,x\n")
    error = input_error([path], column="client")
    assert error.source == path
    assert error.line == 1
    assert "'client'" in str(error)
    assert "'device', 'group'" in str(error)


def test_csv_row_with_too_few_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv", b"a,client_id\nx,GID_a@@@1\nonly\n")
    error = input_error([path])
    assert error.line == 3
    assert "1 fields" in str(error)


def test_csv_empty_file_has_no_header(tmp_path: Path) -> None:
    error = input_error([write(tmp_path, "f.csv", b"\n\n")])
    assert "no header" in str(error)


def test_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "f.tsv", b"x\tclient_id\n1,2\tGID_a@@@1\n")
    assert ids([path]) == ["GID_a@@@1"]


# gzip


def test_gzip_text_and_csv(tmp_path: Path) -> None:
    text = write(tmp_path, "a.txt.gz", b"GID_a@@@1\nGID_a@@@2\n")
    table = write(tmp_path, "b.CSV.GZ", b"client_id\nGID_a@@@3\n")
    assert ids([text, table]) == ["GID_a@@@1", "GID_a@@@2", "GID_a@@@3"]


def test_truncated_gzip_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "a.txt.gz"
    path.write_bytes(gzip.compress(b"GID_a@@@1\n" * 1000)[:-20])
    error = input_error([str(path)])
    assert error.source == str(path)
    assert "cannot read" in str(error)


def test_not_gzip_named_gz(tmp_path: Path) -> None:
    path = tmp_path / "a.txt.gz"
    path.write_bytes(b"GID_a@@@1\n")
    assert "cannot read" in str(input_error([str(path)]))


def test_gzip_without_gz_name_hints(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", gzip.compress(b"GID_a@@@1\n"))
    error = input_error([path])
    assert "gzip" in str(error)
    assert error.line == 1


# Malformed files


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"GID_a@@@1\nGID_a@@@\xe9t\xe9\n")
    error = input_error([path])
    assert (error.source, error.line) == (path, 2)
    assert "not UTF-8" in str(error)
    assert "0xe9" in str(error)


def test_nul_byte(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"GID_a@@@1\nGID\x00a\n")
    error = input_error([path])
    assert error.line == 2
    assert "NUL" in str(error)


def test_binary_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bin", bytes(range(256)) * 4)
    assert isinstance(input_error([path]), InputError)


def test_long_line_is_an_error_not_a_memory_spike(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"GID_a@@@1\n" + b"x" * 1_000_000 + b"\nGID_a@@@2\n")
    error = input_error([path])
    assert error.line == 2
    assert str(MAX_LINE_BYTES) in str(error)


def test_line_at_the_limit_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"y" * MAX_LINE_BYTES + b"\n")
    assert ids([path]) == ["y" * MAX_LINE_BYTES]


def test_csv_quoted_field_running_on_is_bounded(tmp_path: Path) -> None:
    body = b'client_id\n"GID_a@@@1\n' + b"x\n" * MAX_LINE_BYTES
    error = input_error([write(tmp_path, "a.csv", body)])
    assert "longer than" in str(error)


def test_missing_source_fails_before_reading(tmp_path: Path) -> None:
    good = write(tmp_path, "a.txt", b"GID_a@@@1\n")
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(InputError) as info:
        read_client_ids([good, missing])  # raises on the call, not on iteration
    assert info.value.source == missing


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        read_client_ids([str(tmp_path)])


# stdin


def test_stdin_is_text_by_default() -> None:
    stdin = io.BytesIO(b"GID_a@@@0\nGID_a@@@1\n")
    rows = list(read_client_ids([], stdin=stdin))
    assert [(r.source, r.line, r.client_id) for r in rows] == [
        ("<stdin>", 1, "GID_a@@@0"),
        ("<stdin>", 2, "GID_a@@@1"),
    ]


@pytest.mark.parametrize("header", [b"client_id", b"ClientId", b"name,clientId,x"])
def test_a_header_on_stdin_is_named_not_scanned_as_an_id(header: bytes) -> None:
    stdin = io.BytesIO(header + b"\nGID_a@@@1\n")
    with pytest.raises(InputError, match=r"<stdin>:1: .*CSV header.*--column "):
        list(read_client_ids([], stdin=stdin))


def test_stdin_dash_and_csv_when_a_column_is_named() -> None:
    stdin = io.BytesIO(b"x,dev\n1,GID_a@@@1\n")
    assert ids(["-"], column="dev", stdin=stdin) == ["GID_a@@@1"]
    stdin = io.BytesIO(b"client_id\nGID_a@@@1\n")
    assert ids(["-"], stdin=stdin, stdin_format="csv") == ["GID_a@@@1"]


def test_empty_stdin() -> None:
    assert ids(["-"], stdin=io.BytesIO(b"")) == []


def test_stdin_that_stays_open_yields_each_line_as_it_arrives() -> None:
    read_fd, write_fd = os.pipe()
    got: queue.Queue[str | BaseException] = queue.Queue()

    def consume() -> None:
        try:
            with os.fdopen(read_fd, "rb") as stdin:
                for row in read_client_ids(["-"], stdin=stdin):
                    got.put(row.client_id)
        except BaseException as exc:
            got.put(exc)
        got.put("EOF")

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        os.write(write_fd, b"GID_a@@@1\nGID_a@@@2\n")
        # The writer is still open: both rows must arrive without waiting for more.
        assert got.get(timeout=5) == "GID_a@@@1"
        assert got.get(timeout=5) == "GID_a@@@2"
        assert got.empty()
        os.write(write_fd, b"GID_a@@@3\n")
        assert got.get(timeout=5) == "GID_a@@@3"
    finally:
        os.close(write_fd)
    assert got.get(timeout=5) == "EOF"
    thread.join(timeout=5)


def test_stdin_csv_that_stays_open_yields_rows_as_they_arrive() -> None:
    read_fd, write_fd = os.pipe()
    got: queue.Queue[str] = queue.Queue()

    def consume() -> None:
        with os.fdopen(read_fd, "rb") as stdin:
            for row in read_client_ids(["-"], stdin=stdin, stdin_format="csv"):
                got.put(row.client_id)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        os.write(write_fd, b"client_id\nGID_a@@@1\n")
        assert got.get(timeout=5) == "GID_a@@@1"
    finally:
        os.close(write_fd)
    thread.join(timeout=5)
    assert not thread.is_alive()


# Any bytes at all: strings or InputError, nothing else.


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), as_csv=st.booleans())
def test_arbitrary_bytes_yield_strings_or_input_error(data: bytes, as_csv: bool) -> None:
    try:
        rows = list(
            read_client_ids(["-"], stdin=io.BytesIO(data), stdin_format="csv" if as_csv else "text")
        )
    except InputError as exc:
        error = exc
    else:
        for row in rows:
            assert isinstance(row.client_id, str)
            assert row.client_id == row.client_id.strip()
            assert row.line >= 1
        return
    assert error.source == "<stdin>"


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_gzip_members_yield_strings_or_input_error(data: bytes) -> None:
    # Raw bytes named .gz, and the same bytes really gzipped.
    with tempfile.TemporaryDirectory() as tmp:
        for name, payload in (("raw.csv.gz", data), ("real.txt.gz", gzip.compress(data))):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(payload)
            with contextlib.suppress(InputError):
                assert all(isinstance(i, str) for i in ids([path]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=20), max_size=20))
def test_text_round_trip(lines: list[str]) -> None:
    # Whatever lines go in come out stripped, blank ones dropped, nothing else lost.
    lines = [line.replace("\n", " ").replace("\r", " ").replace("\x00", " ") for line in lines]
    data = "\n".join(lines).encode()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]  # a leading BOM is dropped on purpose
    expected = [line.strip() for line in lines if line.strip()]
    assert ids(["-"], stdin=io.BytesIO(data)) == expected
