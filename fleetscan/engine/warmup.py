"""The warm-up gate: the scan's first call goes out alone.

It pays the cold start (a new connection, code run for the first time: 5-20 ms on
loopback), and calls paced right behind it would reach the server bunched up with it:
301 in its first second at --qps 300 (benchmarks/bench_rate.py). So the others wait
for its answer, up to ``WARM_UP_SECONDS``, before they take a token. They then pass
the gate one per loop iteration (a Lock wakes one waiter per release): an Event woke
them all in one iteration, and that herd of hundreds of workers held up the sends of
the first tokens by ~6 ms: 502 in a second at --qps 500.
"""

from __future__ import annotations

import asyncio

__all__ = ["WARM_UP_SECONDS", "WarmUpGate"]

# The longest the other calls wait for the scan's first answer.
WARM_UP_SECONDS = 1.0


class WarmUpGate:
    """Shut until the scan's first attempt has its answer (or ``timeout`` passed)."""

    __slots__ = ("_lock", "_timeout", "warm")

    def __init__(self, *, timeout: float = WARM_UP_SECONDS) -> None:
        self._timeout = timeout
        # True once open; until then the first call holds the lock, the others queue on it.
        self.warm = False
        self._lock = asyncio.Lock()

    async def enter(self) -> bool:
        """Wait until this call may go on; True for the first call, which then must
        `open` the gate once its first attempt is answered (or never sent)."""
        if self.warm:
            return False
        if self._lock.locked():
            async with self._lock:
                return False
        await self._lock.acquire()  # not locked: returns at once
        asyncio.get_running_loop().call_later(self._timeout, self.open)
        return True

    def open(self) -> None:
        """The first answer is in (or was too slow to wait for): let the others go."""
        if not self.warm:
            self.warm = True
            self._lock.release()
