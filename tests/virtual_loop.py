"""An event loop on a virtual clock, for tests whose subject is time.

Time passes only when the loop would otherwise wait: a timer "fires" by moving the
clock (optionally late by a random amount, to stand in for a busy loop), so a test
of a 10 s timeout takes microseconds and cannot flake on a loaded machine. As
aiolimiter's own tests fake the loop clock.

Real sockets (a loopback server on the same loop) still work: the selector polls
them before it moves the clock. Only when nothing at all is scheduled does it wait
for them for real, and if none wakes the loop it raises instead of hanging.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["DEADLOCK_WAIT_S", "VirtualClock", "VirtualLoop", "max_in_window", "run_virtual"]

T = TypeVar("T")
# Real seconds a loop with nothing scheduled waits for a socket before it gives up.
DEADLOCK_WAIT_S = 5.0


class VirtualClock:
    """Seconds that pass only when the loop would otherwise wait."""

    def __init__(self, *, lateness: float = 0.0, seed: int = 1, iteration: float = 1e-6) -> None:
        self.now = 0.0
        self.lateness = lateness
        self.iteration = iteration
        self._rng = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    def stall(self, seconds: float) -> None:
        """Block the loop for ``seconds``: call it from a callback or a task, as a GC
        pause or a busy CPU would."""
        self.now += seconds

    def wait(self, timeout: float) -> None:
        self.now += timeout + self._rng.uniform(0.0, self.lateness)

    def tick(self) -> None:
        # Each loop iteration costs a microsecond, as on a real loop (without it a
        # timer due within the loop's clock resolution would spin forever), or
        # ``iteration`` seconds: a busy loop, whose every iteration runs many callbacks.
        self.now += self.iteration


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never blocks on a timer: it advances the virtual clock instead."""

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
        if ready or timeout == 0:
            return ready
        if timeout is not None:
            self._clock.wait(timeout)
            return ready
        # Nothing is scheduled: only a real socket can wake the loop now. The loop's
        # own wake-up pipe is always registered; anything beyond it is a socket.
        if len(self._real.get_map()) > 1:
            ready = self._real.select(DEADLOCK_WAIT_S)
        if not ready:
            raise RuntimeError("deadlock: nothing scheduled on the virtual loop")
        return ready

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class _VirtualEventLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock()


def run_virtual(clock: VirtualClock, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh loop whose time is ``clock``; as `asyncio.run`, tasks
    still pending at the end (a server's handlers) are cancelled before it closes."""
    with asyncio.Runner(loop_factory=lambda: _VirtualEventLoop(clock)) as runner:
        return runner.run(main())


class VirtualLoop:
    """A clock and a way to run a coroutine on it: the ``virtual_loop`` fixture."""

    def __init__(self, *, lateness: float = 0.0, seed: int = 1) -> None:
        self.clock = VirtualClock(lateness=lateness, seed=seed)

    def run(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return run_virtual(self.clock, main)


def max_in_window(times: list[float], width: float) -> int:
    """The most events in any half-open window [t, t + width) of sorted ``times``."""
    best = first = 0
    for last, t in enumerate(times):
        while t - times[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best
