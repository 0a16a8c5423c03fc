"""``scan --metrics-file``: Prometheus text format, parsed back by a strict parser written
here, with values equal to the summary and the emulator's own counters; written by
rename; the last completed scan's time survives a scan that did not complete."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

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

ROOMY = Limits(qps_single=5000, qps_batch=5000, ip_limit=0)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_exposition(text: str) -> tuple[Samples, dict[str, str]]:
    """The text format, strictly: HELP and TYPE once per family, before its samples;
    label values quoted and escaped; a float per sample; no duplicate series."""
    assert text.endswith("\n")
    samples: Samples = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name)
            assert help_text
            assert name not in helped
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name in helped
            assert name not in types
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = _SAMPLE.match(line)
        assert match, line
        name, labels_text, value = match.groups()
        assert name in types, f"{name}: a sample before its TYPE"
        labels: set[tuple[str, str]] = set()
        if labels_text:
            pos = 0
            for label in _LABEL.finditer(labels_text):
                assert label.start() == pos, labels_text
                labels.add((label.group(1), label.group(2)))
                pos = label.end() + 1 if label.end() < len(labels_text) else label.end()
                if label.end() < len(labels_text):
                    assert labels_text[label.end()] == ","
            assert pos == len(labels_text), labels_text
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate series {key}"
        number = float(value)
        assert not math.isnan(number)
        samples[key] = number
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    base = {"instance_id": DEFAULT_INSTANCE_ID, "mode": "single"}
    return samples[(name, frozenset({**base, **labels}.items()))]


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "FLEETSCAN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    with run_emulator_in_thread(EmulatorConfig(limits=ROOMY)) as emulator:
        yield emulator


def scan(emu: ThreadedEmulator, tmp_path: Path, *more: str) -> int:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"GID_metrics@@@dev-{i}\n" for i in range(150)) + "GID_bad@@@x y\n")
    return main(
        [
            "scan",
            "--endpoint",
            emu.url,
            "--instance-id",
            DEFAULT_INSTANCE_ID,
            "--quiet",
            str(ids),
            "-o",
            str(tmp_path / "out.ndjson"),
            *more,
        ]
    )


def test_the_metrics_file_parses_back_to_the_scans_figures(
    tmp_path: Path, emu: ThreadedEmulator
) -> None:
    metrics_dir = tmp_path / "textfile"
    metrics_dir.mkdir()
    prom = metrics_dir / "fleetscan.prom"
    summary_file = tmp_path / "summary.json"
    assert scan(emu, tmp_path, "--metrics-file", str(prom), "--summary", str(summary_file)) == 0
    samples, types = parse_exposition(prom.read_text())
    summary = orjson.loads(summary_file.read_bytes())
    assert types["fleetscan_ids"] == "gauge"
    for status in ("online", "offline", "error", "invalid"):
        assert value(samples, "fleetscan_ids", status=status) == summary[f"ids_{status}"]
    assert value(samples, "fleetscan_ids", status="invalid") == 1
    # The emulator's own count of what it was asked and what it billed.
    stats = emu.stats()
    assert value(samples, "fleetscan_calls", outcome="sent") == stats.requests == 150
    assert value(samples, "fleetscan_billable_transactions") == summary["billable_transactions"]
    assert value(samples, "fleetscan_scan_duration_seconds") == summary["duration_seconds"]
    assert value(samples, "fleetscan_scan_completed") == 1
    ended = value(samples, "fleetscan_last_scan_timestamp_seconds")
    assert value(samples, "fleetscan_last_completed_scan_timestamp_seconds") == ended
    assert [p.name for p in metrics_dir.iterdir()] == ["fleetscan.prom"]  # no temp file left


def test_a_scan_that_does_not_complete_keeps_the_last_completed_time(
    tmp_path: Path, emu: ThreadedEmulator
) -> None:
    prom = tmp_path / "fleetscan.prom"
    assert scan(emu, tmp_path, "--metrics-file", str(prom)) == 0
    first, _ = parse_exposition(prom.read_text())
    inode = prom.stat().st_ino
    emu.control.revoke_key(DEFAULT_ACCESS_KEY_ID)
    assert scan(emu, tmp_path, "--metrics-file", str(prom)) == 3  # aborted
    second, _ = parse_exposition(prom.read_text())
    assert prom.stat().st_ino != inode, "replaced by a rename, not rewritten in place"
    assert value(second, "fleetscan_scan_completed") == 0
    assert value(second, "fleetscan_last_scan_timestamp_seconds") > value(
        first, "fleetscan_last_scan_timestamp_seconds"
    )
    assert value(second, "fleetscan_last_completed_scan_timestamp_seconds") == value(
        first, "fleetscan_last_completed_scan_timestamp_seconds"
    )


def test_the_parser_here_is_strict() -> None:
    good = '# HELP a x\n# TYPE a gauge\na{k="v\\"q"} 1\n'
    assert parse_exposition(good)[0] == {("a", frozenset({("k", 'v\\"q')})): 1.0}
    for bad in (
        "a 1\n",  # no TYPE
        '# HELP a x\n# TYPE a gauge\na{k="v"} 1\na{k="v"} 2\n',  # duplicate
        "# HELP a x\n# TYPE a gauge\na{k=v} 1\n",  # unquoted
        "# HELP a x\n# TYPE a gauge\na one\n",  # not a number
    ):
        with pytest.raises((AssertionError, ValueError)):
            parse_exposition(bad)


def test_a_metrics_file_in_a_missing_directory_is_refused_before_any_call(
    tmp_path: Path, emu: ThreadedEmulator
) -> None:
    assert scan(emu, tmp_path, "--metrics-file", str(tmp_path / "no" / "m.prom")) == 2
    assert emu.stats().requests == 0
