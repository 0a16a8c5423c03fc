"""The client IDs every benchmark scans: valid, unique, ~30 characters like real ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["client_id", "client_ids", "write_ids"]

# Lines handed to one write() while generating a file.
_CHUNK = 100_000


def client_id(i: int) -> str:
    """The i-th benchmark client ID."""
    return f"GID_fleet_bench@@@dev-{i:09d}"


def client_ids(n: int, start: int = 0) -> Iterator[str]:
    """``n`` client IDs from the ``start``-th on."""
    return (client_id(i) for i in range(start, start + n))


def write_ids(path: Path, n: int) -> Path:
    """A text file of ``n`` unique client IDs, one a line."""
    with open(path, "w", encoding="ascii") as f:
        for first in range(0, n, _CHUNK):
            count = min(_CHUNK, n - first)
            f.write("\n".join(client_ids(count, first)))
            f.write("\n")
    return path
