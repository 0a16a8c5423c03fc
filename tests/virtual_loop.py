"""An event loop whose clock is virtual: seconds pass only when the loop would wait.

A timer "fires" by moving the clock (optionally late by a random amount, to stand in
for a busy loop), so tests of timing logic (pacing, warm-up, grace periods, batch
fill) run in milliseconds and cannot flake on a loaded machine. Nothing on it may
wait for another thread or a socket: with nothing scheduled and nothing ready, the
loop would wait forever, and `VirtualSelector` says so instead.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


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

    def tick(self) -> None:
        # Each loop iteration costs a microsecond, as on a real loop; without it a
        # timer due within the loop's clock resolution would spin forever.
        self.now += 1e-6


class VirtualSelector(selectors.BaseSelector):
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
        if not ready:
            if timeout is None:
                raise RuntimeError("deadlock: nothing scheduled on the virtual loop")
            self._clock.wait(timeout)
        return ready

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


def run_virtual(main: Callable[[], Awaitable[T]], clock: VirtualClock | None = None) -> T:
    """Run ``main()`` to completion on a fresh loop with a virtual clock."""
    clock = clock or VirtualClock()
    loop = asyncio.SelectorEventLoop(VirtualSelector(clock))
    loop.time = clock  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
