"""A virtual event loop for pacing tests: seconds pass only when the loop would wait.

As aiolimiter's own tests fake the loop clock: a timer "fires" by moving the clock,
optionally late by a random amount to stand in for a busy loop. `VirtualClock.stall`
blocks the loop for a while, as a GC pause or a busy CPU would.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["VirtualClock", "max_in_window", "run_virtual"]


class VirtualClock:
    """Seconds that pass only when the loop would otherwise wait."""

    def __init__(self, *, lateness: float = 0.0, seed: int = 1) -> None:
        self.now = 0.0
        self.lateness = lateness
        self._rng = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    def wait(self, timeout: float) -> None:
        self.now += timeout + self._rng.uniform(0.0, self.lateness)

    def stall(self, seconds: float) -> None:
        """Block the loop for ``seconds``: call it from a callback or a task."""
        self.now += seconds

    def tick(self) -> None:
        # Each loop iteration costs a microsecond, as on a real loop; without it a
        # timer due within the loop's clock resolution would spin forever.
        self.now += 1e-6


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never blocks: it advances the virtual clock instead."""

    def __init__(self, clock: VirtualClock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        self._clock.tick()
        if not ready and timeout:
            if timeout is None:
                raise RuntimeError("deadlock: nothing scheduled on the virtual loop")
            self._clock.wait(timeout)
        return ready

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


def run_virtual(clock: VirtualClock, main: Callable[[], Awaitable[Any]]) -> Any:
    loop = asyncio.SelectorEventLoop(_VirtualSelector(clock))
    loop.time = clock  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def max_in_window(times: list[float], width: float) -> int:
    """The most acquisitions in any half-open window [t, t + width)."""
    best = first = 0
    for last, t in enumerate(times):
        while t - times[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best
