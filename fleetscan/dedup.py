"""A compact set of client IDs, for inputs of tens of millions of lines.

A Python ``set`` of strings costs about 100 bytes per ID (the string object plus the
set slot), so 10 million IDs would need a gigabyte. ``SeenSet`` keeps 110 bits of
each ID's BLAKE2b digest instead, in sorted ``array`` columns split into 16,384
shards: about 12 bytes per ID plus allocator slack (15 measured at 10 million,
``benchmarks/bench_memory.py``). Each shard grows on its own by a few percent, so
the set never doubles in one step and peak memory tracks its size.

Two distinct IDs are taken for one only when those 110 bits agree. By the birthday
bound n² / 2¹¹¹ the odds that this happens anywhere in the set are about 4e-20 for
10 million IDs and 4e-18 for 100 million. BLAKE2b is a cryptographic hash,
so crafted inputs cannot make collisions more likely.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable

__all__ = ["SHARD_BITS", "SeenSet", "blake2b_128"]

# 2**14 shards: at 10M IDs a shard holds ~600 entries, so an insert moves ~7 KB.
SHARD_BITS = 14

_SHARD_SHIFT = 64 - SHARD_BITS
_LOW32 = 0xFFFF_FFFF
_TWO_WORDS = struct.Struct(">QQ").unpack_from


def blake2b_128(data: bytes) -> bytes:
    """The 16-byte BLAKE2b digest ``SeenSet`` keys on."""
    return hashlib.blake2b(data, digest_size=16).digest()


class SeenSet:
    """Client IDs seen so far: ``add`` says whether an ID is new.

    ``digest`` maps UTF-8 bytes to at least 16 bytes; tests pass a weak one to force
    the rare paths. Of its first 128 bits, 14 pick the shard, 64 are the sorted key
    and 32 more settle ties between equal keys: 110 bits in all. (The 18 bits in
    between are unused; 110 bits give the odds in the module docstring.)
    """

    __slots__ = ("_digest", "_exts", "_keys", "_len")

    def __init__(self, *, digest: Callable[[bytes], bytes] = blake2b_128) -> None:
        self._digest = digest
        # Per shard: sorted 64-bit keys, and beside each key 32 more bits of its
        # digest; None until the shard's first ID, so a small set costs little.
        self._keys: list[array[int] | None] = [None] * (1 << SHARD_BITS)
        self._exts: list[array[int] | None] = [None] * (1 << SHARD_BITS)
        # How many distinct IDs were added.
        self._len = 0

    def add(self, client_id: str) -> bool:
        """Remember ``client_id``; True when it was not seen before."""
        high, key = _TWO_WORDS(self._digest(client_id.encode("utf-8", "surrogatepass")))
        shard = high >> _SHARD_SHIFT
        ext = high & _LOW32
        keys = self._keys[shard]
        exts = self._exts[shard]
        if keys is None or exts is None:
            self._keys[shard] = array("Q", (key,))
            self._exts[shard] = array("I", (ext,))
            self._len += 1
            return True
        at = bisect_left(keys, key)
        while at < len(keys) and keys[at] == key:
            if exts[at] == ext:
                return False
            at += 1
        keys.insert(at, key)
        exts.insert(at, ext)
        self._len += 1
        return True

    def __contains__(self, client_id: object) -> bool:
        if not isinstance(client_id, str):
            return False
        high, key = _TWO_WORDS(self._digest(client_id.encode("utf-8", "surrogatepass")))
        shard = high >> _SHARD_SHIFT
        ext = high & _LOW32
        keys = self._keys[shard]
        exts = self._exts[shard]
        if keys is None or exts is None:
            return False
        at = bisect_left(keys, key)
        while at < len(keys) and keys[at] == key:
            if exts[at] == ext:
                return True
            at += 1
        return False

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"<SeenSet of {self._len} client IDs>"
