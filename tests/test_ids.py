"""Local client ID validation (onsmqtt-api.md section 6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetscan.ids import client_id_problem, instance_id_problem


@pytest.mark.parametrize(
    "client_id",
    ["GID_test@@@dev1", "GID-abc@@@d", "GID_a_b-c@@@D-1_x", "GID_" + "x" * 3 + "@@@" + "d" * 54],
)
def test_valid_ids(client_id: str) -> None:
    assert client_id_problem(client_id) is None


@pytest.mark.parametrize(
    ("client_id", "why"),
    [
        ("", "empty"),
        ("GID_test@@@" + "d" * 60, "longer than 64"),
        ("GID_testdev1", "@@@"),
        ("gid_test@@@dev1", "start with"),
        ("GID_ab@@@dev1", "shorter than 7"),
        ("GID_te st@@@dev1", "' '"),
        ("GID_test@@@", "empty device"),
        ("GID_test@@@dev 1", "' '"),
        ("GID_test@@@dev/1", "'/'"),
        ("GID_test@@@dev:1", "':'"),
        ("GID_test@@@dev,1", "','"),
        ("GID_test@@@dev%1", "'%'"),
        ("GID_test@@@dev\x001", "'\\x00'"),
        ("GID_test@@@dev\t1", "'\\t'"),
        ("GID_test@@@dév1", "'é'"),
        ("GID_test@@@d@@@e", "'@'"),
    ],
)
def test_invalid_ids_say_why(client_id: str, why: str) -> None:
    problem = client_id_problem(client_id)
    assert problem is not None
    assert why in problem


@given(st.text())
def test_a_valid_id_is_always_safe_ascii(client_id: str) -> None:
    if client_id_problem(client_id) is None:
        assert len(client_id) <= 64
        assert client_id.isascii()
        assert not any(c in client_id for c in " /:,%\t\r\n\x00")


def test_instance_ids() -> None:
    assert instance_id_problem("mqtt-cn-0pp12gl0000") is None
    assert instance_id_problem("post-cn-x") is None
    assert instance_id_problem("other-prefix_1") is None
    assert instance_id_problem("") is not None
    assert instance_id_problem("mqtt cn") is not None
