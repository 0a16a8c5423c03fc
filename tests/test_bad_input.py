"""Garbage in the input, through ``fleetscan scan`` against the emulator (issue 5).

Every kind of bad input ends in one of two ways: an ``invalid`` record for an ID that
cannot be a client ID (never sent: the emulator's per-ID counters prove it), or exit 2
with ``file:line: why`` on stderr for a file that is not text. Never a traceback, never
a silent loss: the IDs before a bad line keep their records.
"""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetscan.cli import main
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)
from fleetscan.ids import client_id_problem
from fleetscan.records import INVALID_CODE

REPO = Path(__file__).resolve().parent.parent
GOOD = [f"GID_test@@@good-{i}" for i in range(5)]
# One of each: what a client ID may not be or hold.
INVALID_IDS = {
    "too long": "GID_test@@@" + "d" * 54,  # 65 characters
    "inner space": "GID_test@@@dev 1",
    "tab": "GID_test@@@dev\t1",
    "bell": "GID_test@@@dev\x071",
    "escape sequence": "GID_test@@@dev\x1b[2J1",
    "DEL": "GID_test@@@dev\x7f1",
    "slash": "GID_test@@@dev/1",
    "colon": "GID_test@@@dev:1",
    "comma": "GID_test@@@dev,1",
    "percent": "GID_test@@@dev%2F1",
    "non-ASCII letter": "GID_test@@@dév1",
    "no separator": "GID_test-dev1",
    "short group": "GID_t@@@dev1",
    "empty device": "GID_test@@@",
}


@pytest.fixture(scope="module")
def emu() -> Iterator[ThreadedEmulator]:
    config = EmulatorConfig(limits=Limits(qps_single=5000, qps_batch=5000, ip_limit=0))
    with run_emulator_in_thread(config) as emulator:
        yield emulator


@pytest.fixture
def env(emu: ThreadedEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo key in the environment, an empty home, fresh emulator counters."""
    for name in list(os.environ):
        if name.startswith("ALIBABA_CLOUD_") and name != "ALIBABA_CLOUD_ECS_METADATA_DISABLED":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    emu.reset()
    return tmp_path


@dataclass
class Run:
    code: int
    records: list[dict[str, Any]]
    stderr: str

    def by_id(self) -> dict[str, dict[str, Any]]:
        ids = [r["client_id"] for r in self.records]
        assert len(ids) == len(set(ids)), "an ID has more than one record"
        return {r["client_id"]: r for r in self.records}


def scan(
    emu: ThreadedEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    stdin: bytes | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> Run:
    """``fleetscan scan ARGS`` in-process, records to a file; its exit code and output."""
    out = tmp_path / "out.ndjson"
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capsys.readouterr()
    code = main(
        [
            "scan",
            "--endpoint",
            emu.url,
            "--instance-id",
            DEFAULT_INSTANCE_ID,
            "--qps",
            "300",
            "-o",
            str(out),
            *args,
        ]
    )
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.out == "", "nothing but records, and those went to -o"
    lines = out.read_bytes().splitlines() if out.exists() else []
    return Run(code, [orjson.loads(line) for line in lines], captured.err)


def queried(emu: ThreadedEmulator) -> set[str]:
    """Every client ID that reached the emulator's service stage."""
    return set(emu.stats().client_id_queries)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# --- text and CSV quirks that are fine ------------------------------------------------------


def test_bom_crlf_blank_lines_and_whitespace_are_read_as_plain_ids(
    emu: ThreadedEmulator, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (
        b"\xef\xbb\xbf" + GOOD[0].encode() + b"\r\n\r\n   \r\n"
        b"  " + GOOD[1].encode() + b"  \r\n\n\t" + GOOD[2].encode() + b"\r\n" + GOOD[3].encode()
    )
    run = scan(emu, env, capsys, write(env / "ids.txt", data))
    assert run.code == 0
    records = run.by_id()
    assert sorted(records) == sorted(GOOD[:4])
    assert {r["status"] for r in records.values()} <= {"online", "offline"}
    for cid, record in records.items():
        assert record["online"] is emu.fleet.is_online(cid)
    assert queried(emu) == set(GOOD[:4])
    assert emu.stats().requests == 4


def test_quoted_csv_fields_with_commas_quotes_bom_and_crlf(
    emu: ThreadedEmulator, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (
        b'\xef\xbb\xbf"name","client_id","note"\r\n'
        b'"a, b","' + GOOD[0].encode() + b'","say ""hi"""\r\n'
        b"plain," + GOOD[1].encode() + b",\r\n"
        b'"multi\r\nline","' + GOOD[2].encode() + b'","x"\r\n'
        b'c,"GID_test@@@dev,1",y\r\n'
        b'd,"GID_test@@@q""uote",z\r\n'
        b"\r\n"
        b'e,"  ' + GOOD[3].encode() + b'  ",\r\n'
    )
    run = scan(emu, env, capsys, write(env / "fleet.csv", data))
    assert run.code == 0
    records = run.by_id()
    assert sorted(records) == sorted([*GOOD[:4], "GID_test@@@dev,1", 'GID_test@@@q"uote'])
    for cid in GOOD[:4]:
        assert records[cid]["online"] is emu.fleet.is_online(cid)
    for cid in ("GID_test@@@dev,1", 'GID_test@@@q"uote'):
        assert records[cid]["status"] == "invalid"
        assert records[cid]["error"]["code"] == INVALID_CODE
    assert queried(emu) == set(GOOD[:4])


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_invalid_ids_get_invalid_records_and_never_a_call(
    emu: ThreadedEmulator, env: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    bad = list(INVALID_IDS.values())
    if suffix == ".csv":
        # CSV quoting carries the comma; a bare field cannot hold it.
        rows = [b"client_id"] + [b'"' + cid.replace('"', '""').encode() + b'"' for cid in bad]
    else:
        rows = [cid.encode() for cid in bad]
    rows[1:1] = [GOOD[0].encode()]
    run = scan(emu, env, capsys, write(env / f"ids{suffix}", b"\n".join(rows) + b"\n"))
    assert run.code == 0  # invalid is a final status
    records = run.by_id()
    assert sorted(records) == sorted([*bad, GOOD[0]])
    for why, cid in INVALID_IDS.items():
        assert client_id_problem(cid) is not None, why
        record = records[cid]
        assert record["status"] == "invalid", why
        assert record["attempts"] == 0
        assert record["api"] is None
        assert record["error"]["code"] == INVALID_CODE
        assert record["error"]["message"]
    assert queried(emu) == {GOOD[0]}
    assert emu.stats().requests == 1


# --- files that are not text: exit 2, file and line -----------------------------------------


def _binary() -> bytes:
    # An executable's start: a magic number, then NUL bytes.
    return b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4


@pytest.mark.parametrize(
    ("name", "data", "args", "line", "message"),
    [
        (
            "ids.txt",
            GOOD[0].encode() + b"\n" + b"GID_test@@@caf\xe9\n" + GOOD[1].encode() + b"\n",
            (),
            2,
            "not UTF-8: byte 0xe9 at column 15",
        ),
        ("ids.txt", GOOD[0].encode() + b"\nGID_te\x00st@@@d1\n", (), 2, "NUL byte"),
        ("ids.txt", GOOD[0].encode() + b"\n" + b"x" * (1 << 20) + b"\n", (), 2, "line longer"),
        ("blob.bin", _binary(), (), 1, "NUL byte: this looks like a binary file"),
        ("ids.csv", b"name,ClientId\n", ("--column", "client_id"), 1, "no column 'client_id'"),
        (
            "ids.csv",
            b"client_id,name\n" + GOOD[0].encode() + b",x\n",
            ("--column", "ClientID"),
            1,
            "no column 'ClientID' in the header; columns are: 'client_id', 'name'",
        ),
        (
            "ids.csv",
            GOOD[0].encode() + b"\n" + GOOD[1].encode() + b"\n",
            (),
            1,
            f"the first row starts with the client ID '{GOOD[0]}', not a header",
        ),
        ("ids.csv", b"", (), None, "empty CSV: no header row"),
    ],
    ids=[
        "non-UTF-8",
        "NUL",
        "1 MB line",
        "binary",
        "missing column",
        "misnamed column",
        "headerless CSV",
        "empty CSV",
    ],
)
def test_a_malformed_file_is_named_with_its_line_and_exit_2(
    emu: ThreadedEmulator,
    env: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: bytes,
    args: tuple[str, ...],
    line: int | None,
    message: str,
) -> None:
    path = write(env / name, data)
    run = scan(emu, env, capsys, *args, path)
    assert run.code == 2
    where = path if line is None else f"{path}:{line}"
    assert f"fleetscan: {where}: {message}" in run.stderr
    # What came before the bad line keeps its record; nothing after it is read or sent.
    before = [GOOD[0]] if line is not None and line > 1 else []
    assert [r["client_id"] for r in run.records] == before
    assert queried(emu) == set(before)


def test_an_empty_text_file_is_an_empty_scan(
    emu: ThreadedEmulator, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = env / "summary.json"
    run = scan(emu, env, capsys, "--summary", str(summary), write(env / "ids.txt", b""))
    assert run.code == 0
    assert run.records == []
    data = orjson.loads(summary.read_bytes())
    assert (data["ids_read"], data["calls_sent"], data["outcome"]) == (0, 0, "completed")
    assert emu.stats().requests == 0


# --- stdin -------------------------------------------------------------------------------------


def test_an_empty_stdin_is_an_empty_scan(
    emu: ThreadedEmulator,
    env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = scan(emu, env, capsys, "-", stdin=b"", monkeypatch=monkeypatch)
    assert run.code == 0
    assert run.records == []
    assert "read 0" in run.stderr  # the summary still says what happened
    assert emu.stats().requests == 0


def test_garbage_on_stdin_is_named_with_its_line(
    emu: ThreadedEmulator,
    env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = b"\xef\xbb\xbf" + GOOD[0].encode() + b"\r\n\r\nGID_test@@@\xff\xfe\r\n"
    run = scan(emu, env, capsys, stdin=data, monkeypatch=monkeypatch)
    assert run.code == 2
    assert "fleetscan: <stdin>:3: not UTF-8: byte 0xff" in run.stderr
    assert [r["client_id"] for r in run.records] == [GOOD[0]]


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetscan", "scan", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


def _read_lines(stream: io.BufferedReader | Any, count: int, timeout: float) -> list[bytes]:
    """``count`` lines from a pipe, or fail once ``timeout`` seconds pass."""
    lines: list[bytes] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while len(lines) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(lines)} of {count} records arrived: {lines}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, "the scan closed its output early"
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            lines.extend(done)
    assert buffer == b""
    return lines


def subprocess_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env.update(
        HOME=str(home),
        PYTHONPATH=str(REPO),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEFAULT_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEFAULT_ACCESS_KEY_SECRET,
    )
    return env


def test_a_stdin_that_never_closes_still_streams_its_results(
    emu: ThreadedEmulator, env: Path
) -> None:
    proc = _cli(
        "--endpoint",
        emu.url,
        "--instance-id",
        DEFAULT_INSTANCE_ID,
        "--quiet",
        env=subprocess_env(env),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        proc.stdin.write(b"\n".join(cid.encode() for cid in GOOD[:3]) + b"\n")
        proc.stdin.flush()
        first = _read_lines(proc.stdout, 3, timeout=15)
        # The pipe stays open: a producer still thinking about more IDs.
        proc.stdin.write(GOOD[3].encode() + b"\n" + INVALID_IDS["slash"].encode() + b"\n")
        proc.stdin.flush()
        second = _read_lines(proc.stdout, 2, timeout=10)
        assert proc.poll() is None, "the scan must wait for more input"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    assert code == 130, err
    assert "Traceback" not in err
    records = {r["client_id"]: r for r in map(orjson.loads, first + second)}
    assert sorted(records) == sorted([*GOOD[:4], INVALID_IDS["slash"]])
    for cid in GOOD[:4]:
        assert records[cid]["online"] is emu.fleet.is_online(cid)
    assert records[INVALID_IDS["slash"]]["status"] == "invalid"
    assert queried(emu) == set(GOOD[:4])
