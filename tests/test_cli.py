"""``fleetscan`` end to end: options, exit codes, the output stream, the summary, stdin,
the demo, SIGTERM and ``--resume``, against the emulator on a thread of its own.

Most tests call ``main([...])`` in-process (it runs its own event loop, so the tests
are sync and the emulator lives on a thread); SIGTERM needs a real process.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from emulator_fixtures import ids

from fleetscan import progress
from fleetscan.cli import EXIT_CODES, build_parser, main
from fleetscan.credentials import Credentials
from fleetscan.emulator import (
    ACTION_BATCH,
    ACTION_SINGLE,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    FaultRule,
    Faults,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)
from fleetscan.engine import Outcome, scan
from fleetscan.errors import UsageError
from fleetscan.estimate import forecast_lanes
from fleetscan.records import INVALID_CODE

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
RECORD_KEYS = {
    "client_id",
    "instance_id",
    "status",
    "online",
    "checked_at",
    "api",
    "request_id",
    "attempts",
    "error",
    "confirmed",
}
ROOMY = Limits(qps_single=5000, qps_batch=5000, ip_limit=0)
INVALID = ["GID_bad@@@has space", "no-separator", "GID_a@@@b/c"]


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    with run_emulator_in_thread(EmulatorConfig(limits=ROOMY)) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo key in the environment and an empty home: no other credentials."""
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "FLEETSCAN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    return tmp_path


@dataclass
class Run:
    code: int
    out: bytes
    err: str

    @property
    def records(self) -> list[dict[str, Any]]:
        return parse_records(self.out)


def parse_records(data: bytes) -> list[dict[str, Any]]:
    """Every line a whole record: nothing else may be in the stream."""
    assert data == b"" or data.endswith(b"\n"), "the last record is not a whole line"
    records = [orjson.loads(line) for line in data.splitlines()]
    for record in records:
        assert isinstance(record, dict)
        assert set(record) == RECORD_KEYS
    return records


def cli(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> Run:
    code = main(list(args))
    captured = capsysbinary.readouterr()
    return Run(code, captured.out, captured.err.decode())


def target(emu: ThreadedEmulator, *more: str) -> list[str]:
    """``scan`` pointed at the emulator, at a rate that needs no warning."""
    return ["scan", "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID, *more]


def id_file(tmp_path: Path, client_ids: list[str], name: str = "ids.txt") -> str:
    path = tmp_path / name
    path.write_text("".join(f"{cid}\n" for cid in client_ids), encoding="utf-8")
    return str(path)


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {r["client_id"]: r for r in records}
    assert len(found) == len(records), "an ID has more than one record"
    return found


def assert_true(emu: ThreadedEmulator, records: list[dict[str, Any]]) -> None:
    for record in records:
        assert record["status"] in ("online", "offline"), record
        assert record["online"] is emu.fleet.is_online(record["client_id"])


def documented(section_start: str, section_end: str) -> str:
    start = README.index(section_start)
    return README[start : README.index(section_end, start)]


def first_cells(table: str) -> list[str]:
    """The first cell of each row of a markdown table."""
    return [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]


def options_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o)\b", text))


# --- options and help ---------------------------------------------------------------------


def test_every_command_has_help_naming_each_documented_option(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    scan_table = documented("`fleetscan scan` options:", "`fleetscan estimate` reads")
    synopsis = documented("fleetscan scan [INPUT ...]", "```")
    emulator_options = documented("Options: fleet", "From Python:")
    expected = {
        "scan": options_in("".join(first_cells(scan_table))),
        "estimate": options_in(next(ln for ln in synopsis.splitlines() if "estimate" in ln)),
        "emulator": options_in(next(ln for ln in synopsis.splitlines() if "emulator" in ln))
        | options_in(emulator_options)
        | {"--tls"},
    }
    assert len(expected["scan"]) >= 20  # the table was found and read
    assert {"--mode", "--qps", "--instance-tps", "--price-per-million"} <= expected["estimate"]
    top = cli(capsysbinary, "--help")
    assert top.code == 0
    for command, options in expected.items():
        assert command in top.out.decode()
        run = cli(capsysbinary, command, "--help")
        assert run.code == 0
        text = run.out.decode()
        missing = {o for o in options if not re.search(rf"(?<![\w-]){o}\b", text)}
        assert not missing, f"{command} --help does not mention {sorted(missing)}"


def test_every_scan_option_parses() -> None:
    args = build_parser().parse_args(
        [
            "scan",
            "a.csv",
            "-",
            "--instance-id=mqtt-cn-x",
            "--region=cn-shanghai",
            "--endpoint=https://example.invalid/",
            "--profile=work",
            "--mode=batch",
            "--qps=12.5",
            "--address-budget=250",
            "--confirm-offline",
            "--source-address=127.0.0.2",
            "--source-address=127.0.0.3",
            "--concurrency=7",
            "--max-attempts=3",
            "--timeout=2.5",
            "--outage-timeout=60",
            "--column=device",
            "--encoding=cp1252",
            "-o",
            "out.ndjson",
            "--summary=s.json",
            "--resume",
            "--history=fleet.db",
            "--metrics-file=fleetscan.prom",
            "--signature=v1",
            "--ca-bundle=ca.pem",
            "--instance-tps=2000",
            "--price-per-million=1.5",
            "--emulator",
            "--progress",
            "--limiter=redis://redis:6379/0",
            "--limiter-timeout=30",
            "--address-group=nat-1",
            "--limiter-account=fleet-prod",
            "--shard=1/3",
            "--shard-seed=s",
        ]
    )
    assert vars(args) | {"handler": None} == {
        "command": "scan",
        "inputs": ["a.csv", "-"],
        "instance_id": "mqtt-cn-x",
        "region": "cn-shanghai",
        "endpoint": "https://example.invalid/",
        "profile": "work",
        "mode": "batch",
        "qps": 12.5,
        "address_budget": 250.0,
        "confirm_offline": True,
        "source_address": ["127.0.0.2", "127.0.0.3"],
        "concurrency": 7,
        "max_attempts": 3,
        "timeout": 2.5,
        "outage_timeout": 60.0,
        "column": "device",
        "encoding": "cp1252",
        "output": "out.ndjson",
        "summary": "s.json",
        "resume": True,
        "history": "fleet.db",
        "metrics_file": "fleetscan.prom",
        "signature": "v1",
        "ca_bundle": "ca.pem",
        "instance_tps": 2000.0,
        "price_per_million": 1.5,
        "emulator": True,
        "quiet": False,
        "progress": True,
        "limiter": "redis://redis:6379/0",
        "limiter_timeout": 30.0,
        "address_group": "nat-1",
        "limiter_account": "fleet-prod",
        "shard": "1/3",
        "shard_seed": "s",
        "handler": None,
    }
    defaults = build_parser().parse_args(["scan"])
    assert (defaults.mode, defaults.qps, defaults.max_attempts, defaults.timeout) == (
        "single",
        None,
        6,
        10.0,
    )
    assert (defaults.signature, defaults.inputs, defaults.resume) == ("v3", [], False)


@pytest.mark.parametrize(
    "bad",
    [
        ["--qps", "0"],
        ["--qps", "nan"],
        ["--qps", "fast"],
        ["--concurrency", "0"],
        ["--max-attempts", "0"],
        ["--timeout", "-1"],
        ["--mode", "parallel"],
        ["--signature", "v2"],
        ["--price-per-million", "-1"],
        ["--quiet", "--progress"],
        ["--no-such-option"],
    ],
)
def test_bad_option_values_are_usage_errors(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, bad: list[str]
) -> None:
    run = cli(capsysbinary, *target(emu), *bad)
    assert run.code == 2
    assert run.out == b""
    assert "usage:" in run.err
    assert emu.stats().requests == 0


@pytest.mark.parametrize(("mode", "qps"), [("single", "501"), ("batch", "101")])
def test_qps_above_the_account_limit_is_refused_before_any_call(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    mode: str,
    qps: str,
) -> None:
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, ids(5)), "--mode", mode, "--qps", qps))
    assert run.code == 2
    assert run.out == b""
    assert f"--qps {qps} is above" in run.err
    assert emu.stats().requests == 0


def test_qps_above_the_address_budget_warns_and_scans_at_the_budget(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    inputs = id_file(tmp_path, ids(20))
    at_budget = cli(capsysbinary, *target(emu, inputs, "--qps", "270"))
    assert at_budget.code == 0
    assert "--address-budget" not in at_budget.err
    over = cli(capsysbinary, *target(emu, inputs, "--qps", "400"))
    assert over.code == 0
    assert "one source address carries at most 270 calls/s (--address-budget" in over.err
    assert len(over.records) == 20
    raised = cli(capsysbinary, *target(emu, inputs, "--qps", "400", "--address-budget", "290"))
    assert raised.code == 0
    assert "at most 290 calls/s" in raised.err


def test_an_address_budget_above_the_block_is_refused_before_any_call(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, ids(5)), "--address-budget", "301"))
    assert run.code == 2
    assert run.out == b""
    assert "--address-budget must be above 0 and at most 300 calls/s" in run.err
    assert emu.stats().requests == 0


def test_resume_needs_an_output_file(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, ids(5)), "--resume"))
    assert run.code == 2
    assert "--resume needs -o FILE" in run.err
    assert run.out == b""
    assert emu.stats().requests == 0


def test_the_instance_is_required_and_may_come_from_the_environment(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inputs = id_file(tmp_path, ids(5))
    missing = cli(capsysbinary, "scan", "--endpoint", emu.url, inputs)
    assert missing.code == 2
    assert "no instance" in missing.err
    assert emu.stats().requests == 0
    monkeypatch.setenv("FLEETSCAN_INSTANCE_ID", DEFAULT_INSTANCE_ID)
    from_env = cli(capsysbinary, "scan", "--endpoint", emu.url, inputs)
    assert from_env.code == 0
    assert {r["instance_id"] for r in from_env.records} == {DEFAULT_INSTANCE_ID}


def test_plain_http_to_a_host_that_is_not_loopback_is_refused_without_a_call(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    # 192.0.2.1 (TEST-NET-1) is never routed: a connection attempt would time out into
    # an error record and exit 1; the refusal comes first, with exit 2 and no record.
    started = time.monotonic()
    run = cli(
        capsysbinary,
        "scan",
        id_file(tmp_path, ids(3)),
        "--endpoint",
        "http://192.0.2.1:8080/",
        "--instance-id",
        DEFAULT_INSTANCE_ID,
        "--timeout",
        "3",
        "--max-attempts",
        "1",
    )
    assert run.code == 2
    assert "http:// is only allowed to loopback" in run.err
    assert run.out == b""
    assert time.monotonic() - started < 2


# --- records, exit codes and the summary --------------------------------------------------


def summary_keys() -> set[str]:
    table = documented("## The summary", "## Exit codes")
    return set(re.findall(r"`([a-z_0-9]+)`", "".join(first_cells(table))))


def test_the_summary_json_has_every_documented_key_and_the_emulators_counts(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(60)
    emu.control.add_rule(FaultRule(code="InternalError", client_id=valid[9], times=2))
    emu.control.add_rule(FaultRule(code="SystemOverFlow", client_id=valid[19], times=1))
    inputs = id_file(tmp_path, [*valid, *valid[:5], *INVALID])
    summary_file = tmp_path / "summary.json"
    run = cli(
        capsysbinary,
        *target(emu, inputs),
        "--summary",
        str(summary_file),
        "--instance-tps",
        "1000",
        "--price-per-million",
        "2.5",
    )
    assert run.code == 0, run.err
    summary = orjson.loads(summary_file.read_bytes())
    documented_keys = summary_keys()
    assert len(documented_keys) >= 30  # the table was found and read
    assert set(summary) == documented_keys
    stats = emu.stats()
    assert summary["billable_transactions"] == stats.successes == summary["calls_succeeded"]
    assert summary["calls_sent"] == stats.requests == len(valid) + 3
    assert summary["calls_failed"] == stats.requests - stats.successes == 3
    assert summary["calls_throttled"] == 1
    assert summary["calls_retried"] == 3
    assert (summary["ids_read"], summary["ids_unique"], summary["ids_duplicate"]) == (68, 63, 5)
    assert summary["ids_invalid"] == len(INVALID)
    assert summary["ids_online"] + summary["ids_offline"] == len(valid)
    assert summary["ids_online"] == sum(emu.fleet.is_online(c) for c in valid)
    assert (summary["ids_error"], summary["ids_not_scanned"], summary["ids_resumed"]) == (0, 0, 0)
    assert summary["outcome"] == "completed"
    assert summary["abort_reason"] is None
    assert (summary["mode"], summary["api"], summary["qps"]) == ("single", ACTION_SINGLE, 270)
    assert summary["instance_id"] == DEFAULT_INSTANCE_ID
    assert 0 < summary["peak_tps"] <= 270
    assert summary["instance_tps_share"] == pytest.approx(summary["peak_tps"] / 1000, abs=1e-4)
    assert summary["estimated_cost"] == pytest.approx(stats.successes * 2.5 / 1e6)
    assert summary["started_at"] <= summary["ended_at"]
    # The same numbers as text on stderr.
    assert f"sent {stats.requests}, succeeded {stats.successes}" in run.err
    assert f"{stats.successes} transactions" in run.err


def test_invalid_ids_are_recorded_never_sent_and_duplicates_scanned_once(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(30)
    inputs = id_file(tmp_path, [*valid, *INVALID, *valid[::2], *INVALID])
    run = cli(capsysbinary, *target(emu, inputs))
    assert run.code == 0
    records = by_id(run.records)
    assert set(records) == {*valid, *INVALID}
    for cid in INVALID:
        assert records[cid]["status"] == "invalid"
        assert records[cid]["attempts"] == 0
        assert records[cid]["error"]["code"] == INVALID_CODE
    assert_true(emu, [records[c] for c in valid])
    assert emu.stats().client_id_queries == dict.fromkeys(valid, 1)


def test_exit_1_when_an_id_ends_in_error(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(25)
    emu.control.add_rule(FaultRule(code="InternalError", client_id=valid[4], times=1))
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, valid), "--max-attempts", "1"))
    assert run.code == 1
    records = by_id(run.records)
    failed = records.pop(valid[4])
    assert failed["status"] == "error"
    assert failed["error"]["code"] == "InternalError"
    assert failed["attempts"] == 1
    assert_true(emu, list(records.values()))
    assert "completed with errors" in run.err


def test_resume_retries_the_error_records_and_nothing_else(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(30)
    failing = valid[10:13]
    for cid in failing:
        emu.control.add_rule(FaultRule(code="ServiceUnavailable", client_id=cid, times=1))
    inputs = id_file(tmp_path, valid)
    output = tmp_path / "out.ndjson"
    first = cli(capsysbinary, *target(emu, inputs), "--max-attempts", "1", "-o", str(output))
    assert first.code == 1
    errors = [r["client_id"] for r in parse_records(output.read_bytes()) if r["error"]]
    assert sorted(errors) == sorted(failing)
    again = cli(capsysbinary, *target(emu, inputs), "--resume", "-o", str(output))
    assert again.code == 0, again.err
    final = by_id(parse_records(output.read_bytes()))
    assert set(final) == set(valid)
    assert_true(emu, list(final.values()))
    queries = emu.stats().client_id_queries
    assert {cid for cid, n in queries.items() if n > 1} == set(failing)
    assert all(queries[cid] == 2 for cid in failing)


def test_exit_1_for_the_one_id_a_batch_was_refused_for(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(30)
    bad = valid[12]
    emu.control.add_rule(
        FaultRule(code="InvalidParameter", client_id=bad, action=ACTION_BATCH, times=99)
    )
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, valid), "--mode", "batch"))
    assert run.code == 1
    records = by_id(run.records)
    assert records.pop(bad)["error"]["code"] == "InvalidParameter"
    assert_true(emu, list(records.values()))
    assert {r["api"] for r in records.values()} == {ACTION_BATCH}


@pytest.mark.parametrize("signature", ["v3", "v1"])
@pytest.mark.parametrize("mode", ["single", "batch"])
def test_records_match_the_fleet_in_both_modes_and_signatures(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    mode: str,
    signature: str,
) -> None:
    valid = ids(45)
    output = tmp_path / "out.ndjson"
    output.write_bytes(b"stale content that a new scan replaces\n")
    run = cli(
        capsysbinary,
        *target(emu, id_file(tmp_path, valid), "--mode", mode, "--signature", signature),
        "-o",
        str(output),
    )
    assert run.code == 0, run.err
    assert run.out == b""  # records go to -o only
    records = by_id(parse_records(output.read_bytes()))
    assert set(records) == set(valid)
    assert_true(emu, list(records.values()))
    action = ACTION_SINGLE if mode == "single" else ACTION_BATCH
    assert {r["api"] for r in records.values()} == {action}
    assert emu.stats().client_id_answers == dict.fromkeys(valid, 1)


# --- account-wide errors ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("cause", ["wrong secret", "unknown instance", "unknown key"])
def test_an_account_wide_error_exits_3_within_a_few_calls(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cause: str,
    mode: str,
) -> None:
    instance = DEFAULT_INSTANCE_ID
    if cause == "wrong secret":
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong-secret-0123")
    elif cause == "unknown key":
        emu.control.remove_key(DEFAULT_ACCESS_KEY_ID)
    else:
        instance = "mqtt-cn-nothere"
    summary_file = tmp_path / "summary.json"
    run = cli(
        capsysbinary,
        "scan",
        id_file(tmp_path, ids(300)),
        "--endpoint",
        emu.url,
        "--instance-id",
        instance,
        "--mode",
        mode,
        "--summary",
        str(summary_file),
    )
    assert run.code == 3, run.err
    assert run.records == []
    code = {
        "wrong secret": "SignatureDoesNotMatch",
        "unknown instance": "InstanceNotFound",
        "unknown key": "InvalidAccessKeyId.NotFound",
    }[cause]
    assert f"stopped: {code}" in run.err
    assert "wrong-secret-0123" not in run.err
    assert 1 <= emu.stats().requests <= 5  # of 300 IDs (30 batches)
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["outcome"] == "aborted"
    assert code in summary["abort_reason"]
    # Of the IDs read before the stop (reading stops too), none has a record.
    assert summary["ids_not_scanned"] == summary["ids_unique"] > 0


def test_a_key_revoked_mid_run_exits_3_keeping_only_true_records(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    revoked_at: list[int] = []

    def revoke_after_40_answers() -> None:
        deadline = time.monotonic() + 10
        while emu.stats().successes < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        revoked_at.append(emu.stats().requests)
        emu.control.revoke_key(DEFAULT_ACCESS_KEY_ID)

    watcher = threading.Thread(target=revoke_after_40_answers)
    watcher.start()
    try:
        run = cli(capsysbinary, *target(emu, id_file(tmp_path, ids(400)), "--qps", "100"))
    finally:
        watcher.join()
    assert run.code == 3, run.err
    assert "InvalidAccessKeyId.Inactive" in run.err
    records = run.records
    assert_true(emu, records)
    stats = emu.stats()
    assert {r["client_id"] for r in records} == set(stats.client_id_answers)
    assert 40 <= len(records) < 200
    # After the revocation: the calls already let through, then nothing.
    assert 1 <= stats.requests - revoked_at[0] <= 6


# --- the output stream, progress and quiet ------------------------------------------------


def test_stdout_holds_only_records_even_with_progress_forced(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.1)
    valid = ids(80)
    emu.control.add_rule(FaultRule(code="InternalError", client_id=valid[3], times=1))
    inputs = id_file(tmp_path, [*valid, INVALID[0]])
    run = cli(capsysbinary, *target(emu, inputs, "--qps", "100", "--progress"))
    assert run.code == 0, run.err
    assert len(by_id(run.records)) == len(valid) + 1
    progress_lines = [ln for ln in run.err.splitlines() if re.match(r"fleetscan: \d+/~\d+ IDs", ln)]
    assert len(progress_lines) >= 3
    assert "completed" in run.err  # the summary text, on stderr
    assert "\x1b" not in run.err  # not a terminal: plain lines, no live line


def test_quiet_prints_no_progress_and_no_summary(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, ids(40)), "--qps", "100", "--quiet"))
    assert run.code == 0
    assert run.err == ""
    assert len(run.records) == 40


def test_ids_from_stdin(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    valid = ids(15)
    for args in ([], ["-"]):
        data = "".join(f"  {cid}\r\n" for cid in [*valid, valid[0]]).encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbf" + data)))
        run = cli(capsysbinary, *target(emu, *args))
        assert run.code == 0, run.err
        records = by_id(run.records)
        assert set(records) == set(valid)
        assert_true(emu, list(records.values()))


def test_an_unreadable_input_is_exit_2_before_any_call(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    run = cli(capsysbinary, *target(emu, str(tmp_path / "missing.txt")))
    assert run.code == 2
    assert "missing.txt" in run.err
    assert emu.stats().requests == 0


# --- estimate, the demo, the library ------------------------------------------------------


def test_estimate_prints_both_modes_without_any_call(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No credentials anywhere: a call could not even be signed.
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    inputs = id_file(tmp_path, [*ids(95), *ids(5), *INVALID])
    run = cli(
        capsysbinary, "estimate", inputs, "--instance-tps", "1000", "--price-per-million", "2"
    )
    assert run.code == 0, run.err
    text = run.out.decode()
    assert "IDs read 103, unique 98, duplicates 5, invalid 3, to query 95" in text
    assert re.search(r"mode\s+single\s+batch", text)
    assert re.search(r"API calls\s+95\s+10\b", text)
    # Single: the address budget (270) under its pace (482); batch: its pace, 96.
    assert re.search(r"rate \(calls/s = added TPS\)\s+270\s+96", text)
    assert re.search(r"share of instance TPS spec\s+27\.0%\s+9\.6%", text)
    assert "cost" in text
    over = cli(capsysbinary, "estimate", inputs, "--mode", "batch", "--qps", "101")
    assert over.code == 2


@pytest.mark.parametrize("sample", ["fleet.csv", "ids.txt"])
def test_the_emulator_demo_scans_the_samples(
    capsysbinary: pytest.CaptureFixture[bytes], sample: str
) -> None:
    path = REPO / "samples" / sample
    run = cli(capsysbinary, "scan", "--emulator", str(path))
    assert run.code == 0, run.err
    records = by_id(run.records)
    estimate = cli(capsysbinary, "estimate", str(path)).out.decode()
    unique = int(re.search(r"unique (\d+)", estimate).group(1))  # type: ignore[union-attr]
    invalid = int(re.search(r"invalid (\d+)", estimate).group(1))  # type: ignore[union-attr]
    assert len(records) == unique
    statuses = [r["status"] for r in records.values()]
    assert statuses.count("invalid") == invalid
    assert {"online", "offline"} <= set(statuses)
    assert "error" not in statuses  # the demo's injected faults are retried away
    assert "scanning against the embedded emulator" in run.err
    assert "completed" in run.err


def test_the_library_yields_what_the_cli_writes(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    inputs = [*ids(40), *ids(10), *INVALID]
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, inputs), "--mode", "batch"))
    assert run.code == 0

    async def library() -> list[dict[str, Any]]:
        demo = Credentials(
            access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=DEFAULT_ACCESS_KEY_SECRET
        )
        return [
            r.to_dict()
            async for r in scan(
                inputs,
                instance_id=DEFAULT_INSTANCE_ID,
                endpoint=emu.url,
                credentials=demo,
                mode="batch",
            )
        ]

    def essence(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        return {
            r["client_id"]: (r["status"], r["online"], r["api"], r["attempts"], r["instance_id"])
            for r in records
        }

    from_cli = essence(run.records)
    assert essence(asyncio.run(library())) == from_cli
    assert len(from_cli) == 40 + len(INVALID)


# --- SIGTERM and --resume -----------------------------------------------------------------


def subprocess_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "FLEETSCAN_"))
    }
    env.update(
        HOME=str(home),
        PYTHONPATH=str(REPO),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEFAULT_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEFAULT_ACCESS_KEY_SECRET,
    )
    return env


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigterm_then_resume_ends_with_each_id_exactly_once(tmp_path: Path) -> None:
    valid = ids(400)
    inputs = id_file(tmp_path, [*valid, *INVALID])
    output = tmp_path / "out.ndjson"
    summary_file = tmp_path / "summary.json"
    config = EmulatorConfig(limits=ROOMY, faults=Faults(latency_ms=30))
    with run_emulator_in_thread(config) as emu:
        command = [sys.executable, "-m", "fleetscan", *target(emu, inputs, "--qps", "100")]
        command += ["-o", str(output), "--summary", str(summary_file)]
        env = subprocess_env(tmp_path)
        first = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 15
            while lines_in(output) < 50:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the scan wrote no records"
                time.sleep(0.01)
            first.send_signal(signal.SIGTERM)
            out, err = first.communicate(timeout=15)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        assert first.returncode == 130, err.decode()
        assert out == b""
        assert b"Traceback" not in err
        done = by_id(parse_records(output.read_bytes()))
        assert 50 <= len(done) < len(valid)
        assert_true(emu, [r for r in done.values() if r["status"] != "invalid"])
        summary = orjson.loads(summary_file.read_bytes())
        assert summary["outcome"] == "interrupted"
        assert summary["ids_not_scanned"] == summary["ids_unique"] - len(done) > 0
        # Every ID that reached the service has its record: the grace period let the
        # calls in flight finish.
        assert set(emu.stats().client_id_queries) <= set(done)

        second = subprocess.run(
            [*command, "--resume", "--qps", "300"],
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 0, second.stderr.decode()
        stats = emu.stats()
    final = by_id(parse_records(output.read_bytes()))
    assert set(final) == {*valid, *INVALID}
    assert_true(emu, [final[c] for c in valid])
    # Answered IDs were never asked again: each reached the service exactly once.
    assert stats.requeried() == []
    assert stats.client_id_queries == dict.fromkeys(valid, 1)
    resumed = orjson.loads(summary_file.read_bytes())
    assert resumed["outcome"] == "completed"
    assert resumed["ids_resumed"] == len(done)
    # The IDs already done are skipped as they are read, like duplicates.
    assert resumed["ids_duplicate"] == len(done)
    assert resumed["ids_unique"] == len(final) - len(done)
    assert (
        resumed["calls_sent"]
        == resumed["billable_transactions"]
        == len(valid) - len([r for r in done.values() if r["status"] != "invalid"])
    )
    assert resumed["ids_online"] + resumed["ids_offline"] + resumed["ids_invalid"] == len(
        final
    ) - len(done)


# --- one set of rules, one outcome order ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "library"),
    [
        (["--qps", "501"], {"qps": 501}),
        (["--mode", "batch", "--qps", "101"], {"mode": "batch", "qps": 101}),
        (["--instance-id", "mqtt cn x"], {"instance_id": "mqtt cn x"}),
    ],
)
def test_the_library_refuses_what_the_cli_refuses_with_the_same_message(
    capsysbinary: pytest.CaptureFixture[bytes],
    emu: ThreadedEmulator,
    tmp_path: Path,
    options: list[str],
    library: dict[str, Any],
) -> None:
    run = cli(capsysbinary, *target(emu, id_file(tmp_path, ids(5))), *options)
    assert run.code == 2
    demo = Credentials(
        access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=DEFAULT_ACCESS_KEY_SECRET
    )
    arguments: dict[str, Any] = {"instance_id": DEFAULT_INSTANCE_ID, **library}

    async def first_record() -> None:
        async for _ in scan(ids(5), endpoint=emu.url, credentials=demo, **arguments):
            pass

    with pytest.raises(UsageError) as refused:
        asyncio.run(first_record())
    assert f"fleetscan: {refused.value}\n" in run.err
    assert emu.stats().requests == 0


def test_an_abort_after_sigint_is_one_outcome_in_the_summary_and_the_exit_code(
    tmp_path: Path,
) -> None:
    # The first call is on the wire when SIGINT comes, and its answer, two seconds
    # later, is an account-wide refusal: the scan aborted, whatever else happened.
    inputs = id_file(tmp_path, ids(50))
    summary_file = tmp_path / "summary.json"
    rule = FaultRule(code="InvalidAccessKeyId.Inactive", times=1, delay_ms=2000)
    with run_emulator_in_thread(EmulatorConfig(limits=ROOMY, rules=(rule,))) as emu:
        command = [sys.executable, "-m", "fleetscan", *target(emu, inputs)]
        command += ["--summary", str(summary_file)]
        scan_process = subprocess.Popen(
            command,
            env=subprocess_env(tmp_path),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 15
            while emu.stats().requests < 1:
                assert scan_process.poll() is None, scan_process.communicate()
                assert time.monotonic() < deadline, "the scan sent nothing"
                time.sleep(0.01)
            scan_process.send_signal(signal.SIGINT)
            out, err = scan_process.communicate(timeout=15)
        finally:
            if scan_process.poll() is None:
                scan_process.kill()
                scan_process.communicate()
        stats = emu.stats()
    assert stats.requests == 1
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["outcome"] == "aborted"
    assert "InvalidAccessKeyId.Inactive" in summary["abort_reason"]
    assert scan_process.returncode == EXIT_CODES[Outcome.ABORTED] == 3, err.decode()
    assert out == b""


def test_resume_says_what_it_repaired_on_stderr_and_in_the_summary(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(20)
    emu.control.add_rule(FaultRule(code="ServiceUnavailable", client_id=valid[4], times=1))
    emu.control.add_rule(FaultRule(code="ServiceUnavailable", client_id=valid[9], times=1))
    inputs = id_file(tmp_path, valid)
    output = tmp_path / "out.ndjson"
    first = cli(capsysbinary, *target(emu, inputs), "--max-attempts", "1", "-o", str(output))
    assert first.code == 1
    torn = b'{"client_id": "GID_test@@@dev'  # what a crash mid-write leaves
    with open(output, "ab") as f:
        f.write(torn)
    summary_file = tmp_path / "summary.json"
    again = cli(
        capsysbinary,
        *target(emu, inputs),
        "--resume",
        "-o",
        str(output),
        "--summary",
        str(summary_file),
    )
    assert again.code == 0, again.err
    torn_note = f"resume: cut a torn last line ({len(torn)} bytes) from {output}"
    dropped_note = f"resume: dropped 2 error records from {output}"
    assert torn_note in again.err
    assert dropped_note in again.err
    warnings = orjson.loads(summary_file.read_bytes())["warnings"]
    assert any(w.startswith(torn_note) for w in warnings), warnings
    assert any(w.startswith(dropped_note) for w in warnings), warnings
    assert set(by_id(parse_records(output.read_bytes()))) == set(valid)


def test_hybrid_mode_writes_one_record_per_id_from_either_lane(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(300)
    summary_file = tmp_path / "summary.json"
    run = cli(
        capsysbinary,
        *target(emu, id_file(tmp_path, valid), "--mode", "hybrid"),
        "--summary",
        str(summary_file),
    )
    assert run.code == 0, run.err
    records = by_id(run.records)
    assert set(records) == set(valid)
    assert {r["online"] for r in records.values()} <= {True, False}
    assert {r["api"] for r in records.values()} <= {ACTION_SINGLE, ACTION_BATCH}
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["mode"] == "hybrid"
    assert summary["qps"] == 270
    assert summary["calls_succeeded"] == emu.stats().successes


def test_two_source_addresses_are_two_ips_to_the_emulator_each_within_its_budget(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    valid = ids(200)
    summary_file = tmp_path / "summary.json"
    run = cli(
        capsysbinary,
        *target(emu, id_file(tmp_path, valid), "--address-budget", "40"),
        "--source-address",
        "127.0.0.2",
        "--source-address",
        "127.0.0.3",
        "--summary",
        str(summary_file),
    )
    assert run.code == 0, run.err
    assert set(by_id(run.records)) == set(valid)
    stats = emu.stats()
    assert set(stats.ip_totals) == {"127.0.0.2", "127.0.0.3"}
    for total in stats.ip_totals.values():
        assert total.requests > 40  # both carried a share
        assert total.max_requests_1s <= 40 + 2  # the budget, give or take arrival jitter
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["qps"] == 80
    addresses = summary["addresses"]
    for address, total in stats.ip_totals.items():
        assert addresses[address]["calls"] == total.requests
        # Counted as each attempt ends: the answers' jitter may bunch one or two more.
        assert addresses[address]["peak_per_second"] <= 40 + 2


def test_a_source_address_the_host_does_not_have_is_refused_before_any_call(
    capsysbinary: pytest.CaptureFixture[bytes], emu: ThreadedEmulator, tmp_path: Path
) -> None:
    run = cli(
        capsysbinary,
        *target(emu, id_file(tmp_path, ids(5)), "--source-address", "192.0.2.1"),
    )
    assert run.code == 2
    assert run.out == b""
    assert "192.0.2.1: cannot send from it" in run.err
    assert emu.stats().requests == 0


def test_estimate_forecasts_the_two_lane_modes_for_the_addresses_given(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    inputs = id_file(tmp_path, ids(100_000))
    one = cli(capsysbinary, "estimate", inputs)
    assert one.code == 0, one.err
    text = one.out.decode()
    assert re.search(r"mode\s+single\s+batch\s+batch\+confirm\s+hybrid\s+hybrid\+confirm", text)
    assert re.search(r"IDs/s\s+270\s+960\s+870\s+1,134\s+870\b", text)
    assert one.err == ""  # no warning at the defaults
    two = cli(
        capsysbinary,
        "estimate",
        inputs,
        "--source-address",
        "127.0.0.2",
        "--source-address",
        "127.0.0.3",
        "--offline-share",
        "0.1",
    )
    assert two.code == 0, two.err
    assert re.search(r"IDs/s\s+482\s+960\s+960\s+1,404\s+1,308\b", two.out.decode())


def test_estimate_takes_the_offline_share_from_the_previous_scan_unless_one_is_given(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, emu: ThreadedEmulator
) -> None:
    inputs = id_file(tmp_path, ids(300))
    previous = str(tmp_path / "last.ndjson")
    scanned = cli(capsysbinary, *target(emu, inputs, "-o", previous, "--quiet"))
    assert scanned.code == 0, scanned.err
    records = parse_records(Path(previous).read_bytes())
    offline = sum(r["status"] == "offline" for r in records)
    share = offline / len(records)
    assert 0 < offline < len(records)  # the emulator's fleet has both
    hybrid_confirm = forecast_lanes(300, batch_rate=96, single_rate=174, hybrid=True, confirm=True)

    def ids_per_s(text: str) -> list[str]:
        found = re.search(r"^IDs/s\s+(.*)$", text, re.MULTILINE)
        assert found is not None, text
        return found.group(1).split()

    default = cli(capsysbinary, "estimate", inputs)
    assert "--confirm-offline: offline share 0.2, assumed\n" in default.out.decode()
    assert ids_per_s(default.out.decode())[-1] == f"{hybrid_confirm.ids_per_second:,.0f}"

    run = cli(capsysbinary, "estimate", inputs, "--previous", previous)
    assert run.code == 0, run.err
    text = run.out.decode()
    assert f"--confirm-offline: offline share {share:.3g}, from {previous} (300 records)" in text
    expected = forecast_lanes(
        300, batch_rate=96, single_rate=174, hybrid=True, confirm=True, offline_share=share
    )
    assert ids_per_s(text)[-1] == f"{expected.ids_per_second:,.0f}"
    assert ids_per_s(text)[-1] != ids_per_s(default.out.decode())[-1]

    given = cli(capsysbinary, "estimate", inputs, "--previous", previous, "--offline-share", "0.5")
    assert "offline share 0.5, from --offline-share" in given.out.decode()

    # A bad line in the previous file: its name and line, exit 2, no forecast.
    with open(previous, "ab") as f:
        f.write(b"not a record\n")
    bad = cli(capsysbinary, "estimate", inputs, "--previous", previous)
    assert bad.code == 2
    assert f"{previous}:301: not a fleetscan NDJSON record" in bad.err
    assert bad.out == b""
