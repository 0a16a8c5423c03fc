"""Records: what the scan learned about an ID, built, counted and handed to ``emit``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fleetscan.errors import ApiError
from fleetscan.records import INVALID_CODE, Record, Status
from fleetscan.summary import ScanCounters

__all__ = ["Recorder"]


class Recorder:
    """Builds each ID's one record, counts it by status, and emits it."""

    __slots__ = ("clock", "counters", "emit", "instance_id")

    def __init__(
        self,
        *,
        instance_id: str,
        counters: ScanCounters,
        emit: Callable[[Record], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.instance_id = instance_id
        self.counters = counters
        self.emit = emit
        self.clock = clock

    def status(
        self,
        client_id: str,
        online: bool,
        api: str,
        request_id: str | None,
        attempts: int,
        *,
        confirmed: bool = False,
    ) -> None:
        if online:
            self.counters.online += 1
        else:
            self.counters.offline += 1
        self.emit(
            Record(
                client_id=client_id,
                instance_id=self.instance_id,
                status=Status.ONLINE if online else Status.OFFLINE,
                checked_at=self.clock(),
                api=api,
                request_id=request_id,
                attempts=attempts,
                confirmed=confirmed,
            )
        )

    def error(self, client_id: str, error: ApiError, api: str, attempts: int) -> None:
        self.counters.errors += 1
        self.emit(
            Record(
                client_id=client_id,
                instance_id=self.instance_id,
                status=Status.ERROR,
                checked_at=self.clock(),
                api=api,
                request_id=error.request_id,
                attempts=attempts,
                error=error.to_record(),
            )
        )

    def invalid(self, client_id: str, problem: str) -> None:
        """An ID that failed validation (admission counted it): never sent."""
        self.emit(
            Record(
                client_id=client_id,
                instance_id=self.instance_id,
                status=Status.INVALID,
                checked_at=self.clock(),
                error={"code": INVALID_CODE, "message": problem, "http_status": None},
            )
        )
