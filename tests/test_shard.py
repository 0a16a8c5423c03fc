"""Shards: an exact, stable, even partition of any set of client IDs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetscan.errors import UsageError
from fleetscan.shard import DEFAULT_SEED, Shard, shard_of

ids = st.lists(st.text(min_size=1, max_size=64), max_size=200)


@given(ids, st.integers(min_value=1, max_value=12), st.text(min_size=1, max_size=80))
def test_the_n_shards_partition_any_set_exactly(
    client_ids: list[str], count: int, seed: str
) -> None:
    shards = [Shard(index=k, count=count, seed=seed) for k in range(count)]
    for cid in client_ids:
        assert sum(shard.owns(cid) for shard in shards) == 1
        assert shards[shard_of(cid, count, seed)].owns(cid)


def test_known_answers_hold_across_processes_and_releases() -> None:
    # Pinned: a shard's --resume and the other shards rely on this exact split.
    code = (
        "from fleetscan.shard import shard_of;"
        "print([shard_of(f'GID_fleet@@@sensor-{i:04d}', 3) for i in range(12)],"
        " shard_of('GID_fleet@@@sensor-0001', 1000),"
        " [shard_of(f'GID_fleet@@@sensor-{i:04d}', 3, 'other') for i in range(12)])"
    )
    expected = "[2, 2, 2, 0, 0, 0, 0, 1, 2, 1, 2, 2] 409 [0, 2, 2, 0, 2, 1, 2, 1, 2, 1, 2, 1]"
    for hash_seed in ("0", "1", "12345"):  # Python's own hash() would differ here
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == expected


def test_the_split_is_even() -> None:
    counts = [0] * 7
    for i in range(70_000):
        counts[shard_of(f"GID_fleet@@@sensor-{i:06d}", 7)] += 1
    # 10,000 expected each; a binomial's sd is ~93, so 3% is over 3 sd.
    assert all(abs(n - 10_000) < 300 for n in counts), counts


def test_another_seed_deals_another_partition() -> None:
    names = [f"dev-{i}" for i in range(1000)]
    first = [shard_of(n, 4) for n in names]
    second = [shard_of(n, 4, "redeal") for n in names]
    assert first != second
    assert first == [shard_of(n, 4, DEFAULT_SEED) for n in names]
    assert Shard.parse("1/4").seed_digest != Shard.parse("1/4", seed="redeal").seed_digest


@pytest.mark.parametrize(
    ("spec", "index", "count"), [("0/1", 0, 1), ("2/3", 2, 3), (" 9/10 ", 9, 10), ("07/8", 7, 8)]
)
def test_parse_reads_k_of_n_zero_based(spec: str, index: int, count: int) -> None:
    shard = Shard.parse(spec)
    assert (shard.index, shard.count, shard.seed) == (index, count, DEFAULT_SEED)
    assert str(shard) == f"{index}/{count}"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("3/3", "index must be 0 to 2"),
        ("1/0", "count must be at least 1"),
        ("0/0", "count must be at least 1"),
        ("-1/3", "a shard is K/N"),
        ("1", "a shard is K/N"),
        ("1/3/5", "a shard is K/N"),
        ("a/3", "a shard is K/N"),
        ("+1/3", "a shard is K/N"),
        ("1.0/3", "a shard is K/N"),
        ("", "a shard is K/N"),
    ],
)
def test_parse_refuses_bad_forms_clearly(spec: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        Shard.parse(spec)


def test_an_empty_seed_is_refused() -> None:
    with pytest.raises(UsageError, match="seed must not be empty"):
        Shard.parse("0/2", seed="")
