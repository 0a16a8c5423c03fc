"""The scan's stop state, shared by the scanner and its lanes.

A stop (SIGINT, SIGTERM, an account-wide error, an outage past its timeout, an output
that cannot be written, a library caller leaving early) is one flag the lanes read
before each unit and each attempt, and one event the scanner awaits. Nothing new goes
on the wire once it is set. A second interrupt hurries the stop: the calls on the wire
are not waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fleetscan.errors import ApiError, LimiterLostError
from fleetscan.outage import OutageOver

__all__ = ["Control", "Stopped"]


class Stopped(Exception):
    """Raised instead of sending once the scan is stopping; the ID keeps no record."""


class Control:
    """Whether the scan is stopping, why, and which workers have a request on the wire."""

    __slots__ = (
        "_event",
        "_hurry",
        "_listeners",
        "abort_error",
        "interrupted",
        "on_wire",
        "output_error",
        "stopping",
    )

    def __init__(self) -> None:
        # Set once a stop is asked for: no new unit is taken, no new attempt sent.
        self.stopping = False
        self.interrupted = False
        self.abort_error: ApiError | OutageOver | LimiterLostError | None = None
        self.output_error: OSError | None = None
        # Workers with a request on the wire: a stop gives these (only) the grace period.
        # Those queued on the pacer or backing off have sent nothing to wait for.
        self.on_wire: set[asyncio.Task[Any]] = set()
        self._event: asyncio.Event | None = None
        # Set by a second interrupt: the calls on the wire are not waited for.
        self._hurry: asyncio.Event | None = None
        # Called once, at the first stop (the feed stops reading).
        self._listeners: list[Callable[[], None]] = []

    def interrupt(self) -> None:
        """A stop asked from outside (a signal, a caller); a second one hurries it."""
        if self.interrupted and self._hurry is not None:
            self._hurry.set()
        self.interrupted = True
        self._begin_stop()

    def abort(self, error: ApiError | OutageOver | LimiterLostError) -> None:
        """An account-wide error, an outage past its timeout, or the shared limiter lost
        past its timeout: every other call would fail (or wait) the same way."""
        if self.abort_error is None:
            self.abort_error = error
        self._begin_stop()

    def output_failed(self, error: OSError) -> None:
        """The records can no longer be written: send nothing more."""
        if self.output_error is None:
            self.output_error = error
        self._begin_stop()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` at the first stop (at once if it came already)."""
        if self.stopping:
            callback()
        else:
            self._listeners.append(callback)

    async def wait(self) -> None:
        """Return once a stop is asked for (on the running loop)."""
        if self._event is None:
            self._event = asyncio.Event()
            if self.stopping:
                self._event.set()
        await self._event.wait()

    async def hurried(self) -> None:
        """Return once a second interrupt asks not to wait for the calls on the wire."""
        if self._hurry is None:
            self._hurry = asyncio.Event()
        await self._hurry.wait()

    def _begin_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self._event is not None:
            self._event.set()
        listeners, self._listeners = self._listeners, []
        for callback in listeners:
            callback()
