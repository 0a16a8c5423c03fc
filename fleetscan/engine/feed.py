"""The hand-off of client IDs from a reader thread to the event loop.

The reader runs in a thread so a slow or never-closing stdin cannot stall the loop;
the room it takes ID by ID (freed by the loop as IDs leave the work queue) bounds
what is read ahead: memory stays flat whatever the input size.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["ROOM_BATCH", "Feed", "ThreadFeed"]

# Queue room goes back to the reader thread this many IDs at a time (see _Room), and the
# loop accepts at most this many read IDs per callback (a long step delays sends).
ROOM_BATCH = 64


class Feed(Protocol):
    """Client IDs delivered on the event loop, one ``on_id`` call each, then one
    ``on_end`` (with the error that ended the input, if any)."""

    def start(
        self, on_id: Callable[[str], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        """Begin delivering (called on the running loop)."""

    def free(self) -> None:
        """One delivered ID left the work queue, or never entered it."""

    def stop(self) -> None:
        """Deliver nothing more; let a blocked reader go (callable from any thread)."""


class ThreadFeed:
    """Reads ``client_ids`` in a daemon thread; at most ``room`` IDs not yet freed."""

    def __init__(self, client_ids: Iterable[str], *, room: int) -> None:
        self._client_ids = client_ids
        self._size = room
        self._room = _Room(room)
        self._stop = threading.Event()
        # IDs read but not yet delivered, and whether a drain is already scheduled.
        self._arrived: deque[str] = deque()
        self._wake_pending = False

    def start(
        self, on_id: Callable[[str], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        arrived = self._arrived

        # The reader wakes the loop only when no drain is on its way already: a wake-up
        # per ID (a write to the loop's self-pipe, a thread switch) cost ~80 us a call,
        # more than the rest of the scan's own work.
        def drain() -> None:
            self._wake_pending = False  # before taking: an ID appended now wakes us anew
            for _ in range(ROOM_BATCH):
                if not arrived:
                    return
                on_id(arrived.popleft())
            self._wake_pending = True  # more to take: after the workers have had a turn
            loop.call_soon(drain)

        def finish(error: BaseException | None) -> None:
            while arrived:
                on_id(arrived.popleft())
            on_end(error)

        def read() -> None:
            error: BaseException | None = None
            try:
                for client_id in self._client_ids:
                    self._room.take()
                    if self._stop.is_set():
                        break
                    arrived.append(client_id)
                    if not self._wake_pending:
                        self._wake_pending = True
                        loop.call_soon_threadsafe(drain)
            except BaseException as exc:  # handed to the loop, raised by the scan
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(finish, error)

        # A daemon thread: a read blocked on a never-closing stdin must not hold exit.
        threading.Thread(target=read, name="fleetscan-reader", daemon=True).start()

    def free(self) -> None:
        self._room.free()

    def stop(self) -> None:
        self._stop.set()
        # Room beyond any the reader could be waiting for: a blocked take returns, sees
        # the stop, and the thread ends.
        self._room.open(self._size + ROOM_BATCH)


class _Room:
    """Room in the work queue: the reader thread takes it ID by ID, the loop frees it.

    Freed room goes back in batches: a release per ID woke the reader thread per call
    (a thread switch and a GIL handoff each). A batch is at most a quarter of the room,
    so a blocked reader always gets room back: the loop then holds all of it, and at
    least three quarters are IDs the workers will take.
    """

    __slots__ = ("_batch", "_freed", "_semaphore")

    def __init__(self, size: int) -> None:
        self._semaphore = threading.Semaphore(size)
        self._batch = max(1, min(ROOM_BATCH, size // 4))
        # Freed on the loop, not yet given back to the reader.
        self._freed = 0

    def take(self) -> None:
        """Wait for room for one more ID (the reader thread)."""
        self._semaphore.acquire()

    def free(self) -> None:
        """One ID left the queue, or never entered it (the loop)."""
        self._freed += 1
        if self._freed >= self._batch:
            self._semaphore.release(self._freed)
            self._freed = 0

    def open(self, n: int) -> None:
        """Give ``n`` at once: a stopping scan wakes a blocked reader."""
        self._semaphore.release(n)
