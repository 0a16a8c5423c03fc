"""SeenSet: a compact set of client IDs that agrees with a Python set."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetscan.dedup import SeenSet


def test_add_reports_new_and_seen() -> None:
    seen = SeenSet()
    assert seen.add("GID_a@@@1") is True
    assert seen.add("GID_a@@@1") is False
    assert seen.add("GID_a@@@2") is True
    assert len(seen) == 2
    assert "GID_a@@@1" in seen
    assert "GID_a@@@3" not in seen
    assert 42 not in seen


def test_case_sensitive_and_unicode() -> None:
    seen = SeenSet()
    assert seen.add("GID_a@@@Dev")
    assert seen.add("GID_a@@@dev")
    assert seen.add("GID_a@@@dév")
    assert seen.add("")
    assert not seen.add("GID_a@@@dév")
    assert len(seen) == 4


def test_many_ids() -> None:
    seen = SeenSet()
    ids = [f"GID_bench@@@device-{i}" for i in range(20_000)]
    assert all(seen.add(i) for i in ids)
    assert not any(seen.add(i) for i in ids)
    assert len(seen) == 20_000
    assert all(i in seen for i in ids[::97])
    assert "GID_bench@@@device-20000" not in seen


def _tied_digest(data: bytes) -> bytes:
    # Every ID lands in shard 0 with sorted key 0; only the 32 tie-break bits differ
    # (and only 4 of them), so the tie-break path is taken all the time.
    low = hashlib.blake2b(data, digest_size=16).digest()[7] & 0x0F
    return bytes(7) + bytes([low]) + bytes(8)


def _few_keys_digest(data: bytes) -> bytes:
    # Sixteen distinct sorted keys in one shard, tie-break bits from a real hash.
    real = hashlib.blake2b(data, digest_size=16).digest()
    return bytes(4) + real[4:8] + bytes(7) + bytes([real[0] & 0x0F])


def test_equal_keys_are_told_apart_by_the_extra_bits() -> None:
    seen = SeenSet(digest=_few_keys_digest)
    ids = [f"id{i}" for i in range(2_000)]
    added = [seen.add(i) for i in ids]
    # With 16 keys x 2**32 tie-breaks, these 2,000 IDs all stay distinct.
    assert all(added)
    assert len(seen) == 2_000
    assert all(i in seen for i in ids)
    assert not any(seen.add(i) for i in ids)


def test_a_full_digest_collision_is_the_only_way_to_lose_an_id() -> None:
    seen = SeenSet(digest=_tied_digest)
    results = [seen.add(f"id{i}") for i in range(100)]
    # Only 16 distinct digests exist, so exactly 16 IDs count as new.
    assert sum(results) == 16
    assert len(seen) == 16


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=60))
def test_agrees_with_a_python_set(items: list[str]) -> None:
    seen = SeenSet()
    reference: set[str] = set()
    for item in items:
        assert seen.add(item) == (item not in reference)
        reference.add(item)
        assert len(seen) == len(reference)
    for item in items:
        assert item in seen
        assert item + "\x00" not in seen or item + "\x00" in reference


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab", max_size=6), max_size=80))
def test_agrees_with_a_python_set_when_keys_tie(items: list[str]) -> None:
    seen = SeenSet(digest=_few_keys_digest)
    reference: set[str] = set()
    for item in items:
        assert seen.add(item) == (item not in reference)
        reference.add(item)
    assert len(seen) == len(reference)
    assert all((i in seen) == (i in reference) for i in ["", "a", "b", "ab", "ba", "zz"])
