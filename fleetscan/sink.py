"""The sink seam: where a scan's records go.

`fleetscan.output.RecordWriter` (NDJSON onto a stream) is the first; a history store
is another. `Tee` hands every record to several sinks, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleetscan.records import Record

__all__ = ["Sink", "Tee"]


class Sink(Protocol):
    """Takes a scan's records, one per unique ID, on the event loop as they arrive.

    ``write`` must be quick (it runs on the hot path: buffer, do not block);
    ``flush`` hands the buffered records on (``fsync``: to disk as well), and is
    called often; ``close`` is the last call, after the final ``flush(fsync=True)``.
    """

    def write(self, record: Record) -> None: ...

    def flush(self, *, fsync: bool = False) -> None: ...

    def close(self) -> None: ...


class Tee:
    """Several sinks as one: each call goes to every sink, in the order given."""

    __slots__ = ("_sinks",)

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self._sinks = tuple(sinks)

    def write(self, record: Record) -> None:
        for sink in self._sinks:
            sink.write(record)

    def flush(self, *, fsync: bool = False) -> None:
        for sink in self._sinks:
            sink.flush(fsync=fsync)

    def close(self) -> None:
        # Every sink is closed even when one fails; the first failure is raised.
        failure: BaseException | None = None
        for sink in self._sinks:
            try:
                sink.close()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
