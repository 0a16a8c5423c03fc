"""Which client IDs are online, now and in the batch cache.

A status is a pure function of the seed, the ID and the time, so nothing is stored
per ID (a fleet of millions costs no memory) and two runs with one seed agree.

- Without churn, an ID is online when ``unit(seed, id, 0) < online_ratio``.
- With ``churn_rate`` r > 0, each ID's status is drawn afresh every 1/r seconds at a
  phase of its own: each second a share r of the fleet is redrawn, and the online
  ratio stays what it was.
- A CSV fleet (``client_id,online``) knows only its IDs: others are offline. Redraws
  use the CSV's own online ratio.
- `set_online` overrides an ID from the current time on.

Batch answers come from a snapshot taken every ``batch_cache_seconds`` (the docs say
the batch call is served from a cache): `batch_view` answers the status as it was at
the last refresh, while `is_online` is always current.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["Fleet", "read_fleet_csv"]

_TRUE = frozenset({"1", "true", "yes", "online", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "offline", "n", "f"})
_HEADER = frozenset({"client_id", "clientid"})
_SCALE = float(1 << 64)


class Fleet:
    """The emulated devices' online statuses."""

    __slots__ = (
        "_cache_seconds",
        "_churn",
        "_clock",
        "_key",
        "_overrides",
        "_ratio",
        "_start",
        "_statuses",
    )

    def __init__(
        self,
        *,
        seed: int = 0,
        online_ratio: float = 0.5,
        statuses: Mapping[str, bool] | None = None,
        churn_rate: float = 0.0,
        batch_cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 <= online_ratio <= 1.0:
            raise ValueError(f"online_ratio must be within 0..1, not {online_ratio}")
        if churn_rate < 0 or batch_cache_seconds < 0:
            raise ValueError("churn_rate and batch_cache_seconds must not be negative")
        # The hash key: statuses depend on the seed and nothing else.
        self._key = seed.to_bytes(16, "little", signed=True)
        # Known IDs and their status at the start, or None for the hashed fleet.
        self._statuses = dict(statuses) if statuses is not None else None
        self._ratio = (
            online_ratio
            if statuses is None
            else (sum(statuses.values()) / len(statuses) if statuses else 0.0)
        )
        self._churn = churn_rate
        self._cache_seconds = batch_cache_seconds
        self._clock = clock
        # Time zero of churn epochs and of batch-cache refreshes.
        self._start = clock()
        # Per ID, (time set, online) pairs in time order.
        self._overrides: dict[str, list[tuple[float, bool]]] = {}

    @classmethod
    def from_csv(
        cls,
        path: Path,
        *,
        seed: int = 0,
        churn_rate: float = 0.0,
        batch_cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> Fleet:
        """A fleet that knows exactly the IDs of a ``client_id,online`` file."""
        return cls(
            statuses=read_fleet_csv(path),
            seed=seed,
            churn_rate=churn_rate,
            batch_cache_seconds=batch_cache_seconds,
            clock=clock,
        )

    @property
    def online_ratio(self) -> float:
        """The share of IDs online, in expectation (for a CSV fleet, of its IDs)."""
        return self._ratio

    def is_online(self, client_id: str, *, at: float | None = None) -> bool:
        """The truth: what a single query answers at ``at`` (default: now)."""
        when = self._clock() if at is None else at
        overrides = self._overrides.get(client_id) if self._overrides else None
        if overrides:
            for set_at, online in reversed(overrides):
                if set_at <= when:
                    return online
        return self._drawn(client_id, when)

    def batch_view(self, client_id: str, *, at: float | None = None) -> bool:
        """What a batch query answers at ``at``: the status at the last cache refresh."""
        when = self._clock() if at is None else at
        if self._cache_seconds > 0:
            n = math.floor((when - self._start) / self._cache_seconds)
            when = self._start + n * self._cache_seconds
        return self.is_online(client_id, at=when)

    def set_online(self, client_id: str, online: bool) -> None:
        """Make ``client_id`` online or offline from now on (batch sees it after a refresh)."""
        self._overrides.setdefault(client_id, []).append((self._clock(), online))

    def _drawn(self, client_id: str, when: float) -> bool:
        epoch = 0
        if self._churn > 0:
            phase = self._unit(client_id, -1)
            epoch = max(0, math.floor((when - self._start) * self._churn + phase))
        statuses = self._statuses
        if statuses is not None:
            known = statuses.get(client_id)
            if known is None:
                return False
            if epoch == 0:
                return known
        return self._unit(client_id, epoch) < self._ratio

    def _unit(self, client_id: str, epoch: int) -> float:
        # A uniform draw in [0, 1) from (seed, ID, epoch): blake2b keyed by the seed.
        digest = hashlib.blake2b(
            f"{epoch}:{client_id}".encode(), digest_size=8, key=self._key
        ).digest()
        return int.from_bytes(digest, "little") / _SCALE


def read_fleet_csv(path: Path) -> dict[str, bool]:
    """``client_id,online`` lines (an optional header; online is true/false/1/0)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return _parse_rows(csv.reader(handle), str(path))


def _parse_rows(rows: Iterable[list[str]], source: str) -> dict[str, bool]:
    statuses: dict[str, bool] = {}
    for line, row in enumerate(rows, start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise ValueError(f"{source}:{line}: expected 'client_id,online', got {row!r}")
        client_id, value = row[0].strip(), row[1].strip().lower()
        if line == 1 and (client_id.lower() in _HEADER or value not in _TRUE | _FALSE):
            continue  # a header line
        if value in _TRUE:
            statuses[client_id] = True
        elif value in _FALSE:
            statuses[client_id] = False
        else:
            raise ValueError(f"{source}:{line}: online must be true or false, not {row[1]!r}")
    return statuses
