"""Signature nonces seen in the last 15 minutes, in bounded memory.

The service refuses a nonce it saw within 15 minutes (``SignatureNonceUsed``); older
requests are refused for their timestamp anyway, so older nonces can be forgotten.
Nonces are kept as 64-bit hashes in per-second buckets: a few dozen bytes each, and
forgetting is O(1) amortized per request.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["NonceStore"]


class NonceStore:
    """Remembers each nonce for ``ttl`` seconds."""

    __slots__ = ("_buckets", "_seen", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        # Hashes of nonces still remembered.
        self._seen: set[int] = set()
        # (second, hashes first seen in that second), oldest first.
        self._buckets: deque[tuple[int, list[int]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, nonce: str, now: float) -> bool:
        """Record ``nonce``; False when it was already used within ``ttl``."""
        self._forget(now)
        key = hash(nonce)
        if key in self._seen:
            return False
        self._seen.add(key)
        second = math.floor(now)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= second:
            buckets[-1][1].append(key)
        else:
            buckets.append((second, [key]))
        return True

    def _forget(self, now: float) -> None:
        # A bucket goes once all of its second is more than ttl old.
        buckets, seen = self._buckets, self._seen
        edge = now - self.ttl
        while buckets and buckets[0][0] + 1 <= edge:
            for key in buckets.popleft()[1]:
                seen.discard(key)
