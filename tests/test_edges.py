"""Nothing lost at the edges (issue 8), in-process: destinations, refusals before any
write or call, resume's checks, options, wording and encodings.

Broken pipes, full disks, signals, a terminal and a dead service need real processes:
tests/test_edges_process.py.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fleetscan import credentials as credentials_module
from fleetscan.cli import EXIT_ABORTED, EXIT_OK, EXIT_USAGE, main
from fleetscan.destination import OutputFile
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)
from fleetscan.scanner import Scanner, ScanSettings

EARLIER = b'{"earlier": "result"}\n'


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    with run_emulator_in_thread(EmulatorConfig(limits=Limits(qps_single=5000, ip_limit=0))) as e:
        yield e


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "FLEETSCAN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ids_file(folder: Path, n: int = 20, name: str = "ids.txt") -> Path:
    path = folder / name
    path.write_text("".join(f"GID_edge@@@d{i}\n" for i in range(n)))
    return path


def scan_args(emu: ThreadedEmulator, *more: str) -> list[str]:
    return ["scan", "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID, "--quiet", *more]


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    code = main(list(argv))
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def calls(emu: ThreadedEmulator) -> int:
    return emu.stats().requests


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- 1, 2, 9: destinations refused before anything is opened for writing -------------------


def test_an_output_that_is_the_input_by_path_symlink_or_hard_link_is_refused(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    source = ids_file(tmp_path)
    before = source.read_bytes()
    (tmp_path / "link").symlink_to(source)
    os.link(source, tmp_path / "hard")
    for option in ("-o", "--summary"):
        for name in (str(source), "link", "hard", "./ids.txt"):
            code, _, err = run(capsysbinary, *scan_args(emu, str(source), option, name))
            assert code == EXIT_USAGE, (option, name)
            assert "is the input" in err, err
            assert source.read_bytes() == before
    assert calls(emu) == 0


def test_clashing_destinations_are_refused_and_dash_means_stdout(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    source = str(ids_file(tmp_path))
    (tmp_path / "x").write_bytes(EARLIER)
    (tmp_path / "y").symlink_to(tmp_path / "x")
    for clash in (
        ["-o", "x", "--summary", "x"],
        ["-o", "x", "--summary", "y"],
        ["-o", "-", "--summary", "-"],
        ["--summary", "-"],  # no -o: the records go to stdout already
    ):
        code, out, err = run(capsysbinary, *scan_args(emu, source, *clash))
        assert code == EXIT_USAGE, clash
        assert "are both" in err, err
        assert out == b""
    assert (tmp_path / "x").read_bytes() == EARLIER
    assert calls(emu) == 0
    code, out, _ = run(capsysbinary, *scan_args(emu, source, "-o", "-", "--summary", "s.json"))
    assert code == EXIT_OK
    assert len(out.splitlines()) == 20  # the records on stdout
    assert not (tmp_path / "-").exists()
    assert orjson.loads((tmp_path / "s.json").read_bytes())["ids_online"] >= 0


@pytest.mark.parametrize(
    ("option", "name", "why"),
    [
        ("-o", "/nodir/x.ndjson", "no such directory"),
        ("-o", ".", "is a directory"),
        ("--summary", "/nodir/s.json", "no such directory"),
        ("--summary", ".", "is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_call(
    emu: ThreadedEmulator,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    option: str,
    name: str,
    why: str,
) -> None:
    code, _, err = run(capsysbinary, *scan_args(emu, str(ids_file(tmp_path)), option, name))
    assert code == EXIT_USAGE
    assert why in err
    assert "Traceback" not in err
    assert calls(emu) == 0


# --- 3: a refused or failed start never destroys an earlier result --------------------------


@pytest.mark.parametrize(
    "trouble",
    [
        ["--endpoint", "http://10.1.2.3/"],
        ["--region", "not a region"],
        ["--summary", "/nodir/s.json"],
        ["--ca-bundle", "/nodir/ca.pem"],
        ["--concurrency", "200000"],
    ],
)
def test_a_refused_start_leaves_the_earlier_output_whole(
    emu: ThreadedEmulator,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    trouble: list[str],
) -> None:
    (tmp_path / "out.ndjson").write_bytes(EARLIER)
    argv = scan_args(emu, str(ids_file(tmp_path)), "-o", "out.ndjson")
    if trouble[0] == "--endpoint":
        argv[2] = trouble[1]
        trouble = []
    code, _, _ = run(capsysbinary, *argv, *trouble)
    assert code == EXIT_USAGE
    assert (tmp_path / "out.ndjson").read_bytes() == EARLIER
    assert hidden_leftovers(tmp_path) == []
    assert calls(emu) == 0


def test_missing_credentials_leave_the_earlier_output_whole(
    emu: ThreadedEmulator,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    (tmp_path / "out.ndjson").write_bytes(EARLIER)
    code, _, err = run(capsysbinary, *scan_args(emu, str(ids_file(tmp_path)), "-o", "out.ndjson"))
    assert code == EXIT_USAGE
    assert "credentials" in err.lower()
    assert (tmp_path / "out.ndjson").read_bytes() == EARLIER
    assert hidden_leftovers(tmp_path) == []


def test_a_scan_refused_by_the_api_before_any_record_leaves_the_earlier_output_whole(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    emu.control.revoke_key(DEFAULT_ACCESS_KEY_ID)
    (tmp_path / "out.ndjson").write_bytes(EARLIER)
    code, _, _ = run(capsysbinary, *scan_args(emu, str(ids_file(tmp_path)), "-o", "out.ndjson"))
    assert code == EXIT_ABORTED
    assert (tmp_path / "out.ndjson").read_bytes() == EARLIER
    assert hidden_leftovers(tmp_path) == []


def test_a_new_output_is_written_beside_its_name_and_moved_into_place_at_its_first_record(
    tmp_path: Path,
) -> None:
    final = tmp_path / "out.ndjson"
    final.write_bytes(EARLIER)
    out = OutputFile(str(final), resume=False)
    assert out.temporary is not None
    assert Path(out.temporary).parent == tmp_path
    out.stream.flush()  # nothing written yet: still the earlier file
    assert final.read_bytes() == EARLIER
    out.stream.write(b'{"new": 1}\n')
    out.stream.flush()
    assert final.read_bytes() == b'{"new": 1}\n'  # in place at once: a kill -9 resumes it
    out.stream.write(b'{"new": 2}\n')
    out.close(keep_empty=False)
    assert final.read_bytes() == b'{"new": 1}\n{"new": 2}\n'
    assert hidden_leftovers(tmp_path) == []
    # A run with no record that did not complete: the earlier file stays.
    out = OutputFile(str(final), resume=False)
    out.close(keep_empty=False)
    assert final.read_bytes() == b'{"new": 1}\n{"new": 2}\n'
    # One that completed with no record: an empty file, as asked.
    out = OutputFile(str(final), resume=False)
    out.close(keep_empty=True)
    assert final.read_bytes() == b""
    assert oct(final.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert hidden_leftovers(tmp_path) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- 4, 5: resume's checks -----------------------------------------------------------------


def test_resume_refuses_a_file_of_another_instance_naming_both_and_changes_nothing(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    other = {
        "client_id": "GID_edge@@@d1",
        "instance_id": "mqtt-cn-other",
        "status": "error",
        "online": None,
        "checked_at": "2026-11-25T18:00:00.123Z",
        "api": "QuerySessionByClientId",
        "request_id": None,
        "attempts": 6,
        "error": {"code": "Timeout", "message": "x", "http_status": None},
    }
    data = orjson.dumps(other) + b"\n"
    (tmp_path / "out.ndjson").write_bytes(data)
    code, _, err = run(
        capsysbinary,
        *scan_args(emu, str(ids_file(tmp_path)), "-o", "out.ndjson", "--resume"),
    )
    assert code == EXIT_USAGE
    assert "mqtt-cn-other" in err
    assert DEFAULT_INSTANCE_ID in err
    assert (tmp_path / "out.ndjson").read_bytes() == data  # the error record not dropped
    assert calls(emu) == 0


# --- 10, 12, 13: refusals in the right order ----------------------------------------------


def test_a_bad_endpoint_is_refused_before_the_credentials_chain_runs(
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    looked: list[object] = []

    async def chain(**kwargs: object) -> object:
        looked.append(kwargs)
        raise AssertionError("the credentials chain ran")

    monkeypatch.setattr(credentials_module, "resolve_credentials", chain)
    argv = ["scan", str(ids_file(tmp_path)), "--instance-id", "mqtt-cn-x"]
    code, _, err = run(capsysbinary, *argv, "--endpoint", "http://10.1.2.3/")
    assert code == EXIT_USAGE
    assert "http:// is only allowed to loopback" in err
    assert looked == []


def test_concurrency_is_bounded_with_a_message(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code, _, err = run(
        capsysbinary, *scan_args(emu, str(ids_file(tmp_path)), "--concurrency", "200000")
    )
    assert code == EXIT_USAGE
    assert "at most 1000" in err
    assert calls(emu) == 0
    code, _, _ = run(
        capsysbinary, *scan_args(emu, str(ids_file(tmp_path)), "--concurrency", "1000")
    )
    assert code == EXIT_OK


@pytest.mark.parametrize(
    "extra",
    [["--endpoint", "http://127.0.0.1:1/"], ["--instance-id", "mqtt-cn-x"], ["--region", "cn-x"]],
)
def test_the_emulator_refuses_options_it_would_ignore(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], extra: list[str]
) -> None:
    code, out, err = run(capsysbinary, "scan", "--emulator", str(ids_file(tmp_path)), *extra)
    assert code == EXIT_USAGE
    assert extra[0] in err
    assert "would be ignored" in err
    assert out == b""


# --- 15: wording -----------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--qps", "--timeout", "--concurrency", "--outage-timeout"])
def test_a_value_that_is_no_number_says_so(
    capsysbinary: pytest.CaptureFixture[bytes], option: str
) -> None:
    code, _, err = run(capsysbinary, "scan", option, "abc")
    assert code == EXIT_USAGE
    assert "'abc' is not a" in err
    assert "_positive" not in err
    assert "invalid" not in err


# --- 16, 17: encodings and stdin ---------------------------------------------------------------


def test_a_windows_1252_csv_names_encoding_and_reads_with_it(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "fleet.csv"
    path.write_bytes("client_id,site\nGID_edge@@@d1,Café\nGID_edge@@@d2,Zürich\n".encode("cp1252"))
    code, _, err = run(capsysbinary, *scan_args(emu, str(path)))
    assert code == EXIT_USAGE
    assert "fleet.csv:2: not UTF-8" in err
    assert "--encoding" in err
    code, out, _ = run(capsysbinary, *scan_args(emu, str(path), "--encoding", "cp1252"))
    assert code == EXIT_OK
    assert sorted(orjson.loads(x)["client_id"] for x in out.splitlines()) == [
        "GID_edge@@@d1",
        "GID_edge@@@d2",
    ]


def test_utf_16_is_named_and_read_with_its_encoding(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes("GID_edge@@@d1\r\nGID_edge@@@d2\r\n".encode("utf-16"))
    code, _, err = run(capsysbinary, *scan_args(emu, str(path)))
    assert code == EXIT_USAGE
    assert "UTF-16" in err
    assert "binary" not in err
    code, out, _ = run(capsysbinary, *scan_args(emu, str(path), "--encoding", "utf-16"))
    assert code == EXIT_OK
    assert len(out.splitlines()) == 2


def test_cr_alone_ends_a_line(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"GID_edge@@@d1\rGID_edge@@@d2\rGID_edge@@@d3\r")
    code, out, _ = run(capsysbinary, *scan_args(emu, str(path)))
    assert code == EXIT_OK
    records = [orjson.loads(x) for x in out.splitlines()]
    assert sorted(r["client_id"] for r in records) == [f"GID_edge@@@d{i}" for i in (1, 2, 3)]
    assert {r["status"] for r in records} <= {"online", "offline"}


def test_a_look_alike_character_is_named_by_its_code_point(
    emu: ThreadedEmulator, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("GID_edge@@@d\u0435v1\n", encoding="utf-8")  # a Cyrillic e
    _code, out, _ = run(capsysbinary, *scan_args(emu, str(path)))
    (record,) = [orjson.loads(x) for x in out.splitlines()]
    assert record["status"] == "invalid"
    assert "U+0435" in record["error"]["message"]
    assert "CYRILLIC SMALL LETTER IE" in record["error"]["message"]


def test_a_header_on_stdin_is_named_and_not_scanned(
    emu: ThreadedEmulator,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = b"client_id,site\nGID_edge@@@d1,a\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run(capsysbinary, *scan_args(emu))
    assert code == EXIT_USAGE
    assert "<stdin>:1:" in err
    assert "--column client_id" in err
    assert out == b""
    assert calls(emu) == 0


# --- 11: a second stop does not wait out the grace period ------------------------------------


class _Hanging:
    """A service that never answers (a call stays on the wire)."""

    def __init__(self) -> None:
        self.on_wire = asyncio.Event()

    async def query_session(self, client_id: str) -> object:
        self.on_wire.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_second_stop_cuts_the_grace_period_short() -> None:
    service = _Hanging()
    settings = ScanSettings(instance_id="mqtt-cn-x", qps=100, grace_seconds=600)
    scanner = Scanner(client=service, settings=settings)  # type: ignore[arg-type]
    run = asyncio.create_task(scanner.run(["GID_edge@@@d1"], emit=lambda record: None))
    await asyncio.wait_for(service.on_wire.wait(), 30)
    scanner.stop()  # the first: calls on the wire get the grace period (600 s here)
    await asyncio.sleep(0.2)
    assert not run.done()
    scanner.stop()  # the second: stop now
    assert await asyncio.wait_for(run, 30) == "interrupted"
