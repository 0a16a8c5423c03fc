"""The audit commands' help names every option the README documents for them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from fleetscan.audit_cli import parse_duration
from fleetscan.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def options_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o)\b", text))


def help_text(capsysbinary: pytest.CaptureFixture[bytes], *command: str) -> str:
    assert main([*command, "--help"]) == 0
    return capsysbinary.readouterr().out.decode()


def test_each_audit_command_has_help_for_its_documented_options(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    synopsis = README[README.index("fleetscan scan [INPUT ...]") :]
    synopsis = synopsis[: synopsis.index("```")]
    lines = {line.split()[1]: line for line in synopsis.splitlines() if line.strip()}
    for command in ("diff", "report"):
        text = help_text(capsysbinary, command)
        expected = options_in(lines[command])
        assert expected, command
        assert {o for o in expected if o not in text} == set(), command
    table = README[README.index("| question | what |") :]
    table = table[: table.index("\n\n")]
    for row in table.splitlines()[2:]:
        question = row.split("`")[1].split()[0]
        text = help_text(capsysbinary, "history", "db", question)
        missing = {o for o in options_in(row) | {"--format"} if o not in text}
        assert not missing, (question, missing)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3d", 259200),
        ("12h", 43200),
        ("1d12h", 129600),
        ("90m", 5400),
        ("45s", 45),
        ("2", 172800),
        ("90min", 5400),
        ("1w", 604800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "3x", "d3", "3d soon"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)
