"""Deterministic shards of a fleet: ``K/N`` keeps the client IDs whose keyed hash is K mod N.

Every shard reads the whole input and keeps its own IDs, so N processes (or hosts, or
the pods of a Kubernetes Indexed Job, ``--shard $JOB_COMPLETION_INDEX/N``) split one
list without talking to each other. The index is 0-based, as zmap, cargo-mutants and
``JOB_COMPLETION_INDEX`` count.

The hash is BLAKE2b keyed with the seed, over the ID's UTF-8 bytes: the same on every
host, every Python and every run (Python's ``hash()`` is salted per process), and a
given ID lands in one shard only, so duplicates stay together. A different seed deals
a different partition (``--shard-seed``, when one unlucky split must be redealt); the
default is fixed forever, since a resume relies on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from fleetscan.errors import UsageError

__all__ = ["DEFAULT_SEED", "Shard", "shard_of"]

# Never change it: a file written by one release is resumed by the next.
DEFAULT_SEED = "fleetscan-shard-v1"

_SPEC = re.compile(r"(\d+)/(\d+)")


def _key(seed: str) -> bytes:
    # BLAKE2b takes a key of at most 64 bytes; hashing the seed first allows any length.
    return hashlib.blake2b(seed.encode(), digest_size=32, person=b"fleetscan-shard").digest()


def shard_of(client_id: str, count: int, seed: str = DEFAULT_SEED) -> int:
    """The shard (0 .. count-1) that owns ``client_id``."""
    return _shard_of(client_id, count, _key(seed))


def _shard_of(client_id: str, count: int, key: bytes) -> int:
    digest = hashlib.blake2b(client_id.encode(), digest_size=8, key=key).digest()
    # 64 bits mod N: the bias is below N / 2**64, nothing any fleet could measure.
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``owns`` says whether an ID is ours.

    >>> shard = Shard.parse("2/3")
    >>> [cid for cid in ("a", "b", "c", "d") if shard.owns(cid)]
    ['a', 'b']
    """

    index: int
    count: int
    seed: str = DEFAULT_SEED
    # The hash key derived from the seed, once.
    _key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"shard index must be 0 to {self.count - 1} for {self.count} shards "
                f"(0-based), not {self.index}"
            )
        if not self.seed:
            raise UsageError("the shard seed must not be empty")
        object.__setattr__(self, "_key", _key(self.seed))

    @classmethod
    def parse(cls, spec: str, *, seed: str = DEFAULT_SEED) -> Shard:
        """``"K/N"`` (0 <= K < N, 0-based) as a Shard; a clear UsageError otherwise."""
        match = _SPEC.fullmatch(spec.strip())
        if match is None:
            raise UsageError(
                f"a shard is K/N: shard K (0-based) of N, e.g. 0/3, 1/3, 2/3; not {spec!r}"
            )
        return cls(index=int(match[1]), count=int(match[2]), seed=seed)

    def owns(self, client_id: str) -> bool:
        """Whether ``client_id`` belongs to this shard."""
        return _shard_of(client_id, self.count, self._key) == self.index

    @property
    def seed_digest(self) -> str:
        """A short fingerprint of the seed, to store with the output and compare on resume."""
        return hashlib.blake2b(self._key, digest_size=8).hexdigest()

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
