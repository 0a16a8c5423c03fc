"""The NDJSON record: one per unique input client ID.

::

    {"client_id": "GID_x@@@d1", "instance_id": "mqtt-cn-…", "status": "online",
     "online": true, "checked_at": "2026-11-25T18:00:00.123Z",
     "api": "QuerySessionByClientId", "request_id": "…", "attempts": 1, "error": null,
     "confirmed": false}

``status`` is ``online``, ``offline``, ``invalid`` or ``error``. The first three are
final: ``--resume`` skips an ID that has one and queries ``error`` ones again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

__all__ = ["FINAL_STATUSES", "INVALID_CODE", "Record", "Status", "rfc3339"]

# The error code of an ``invalid`` record: the ID failed local validation, no call made.
INVALID_CODE = "InvalidClientId"


class Status(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    INVALID = "invalid"
    ERROR = "error"


FINAL_STATUSES = frozenset({Status.ONLINE, Status.OFFLINE, Status.INVALID})


def rfc3339(when: datetime) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-25T18:00:00.123Z``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """What fleetscan learned about one client ID."""

    client_id: str
    instance_id: str
    status: Status
    checked_at: datetime
    api: str | None = None
    request_id: str | None = None
    attempts: int = 0
    error: dict[str, Any] | None = None
    # A batch answer said offline and the real-time API was asked again (--confirm-offline).
    confirmed: bool = False

    @property
    def online(self) -> bool | None:
        if self.status is Status.ONLINE:
            return True
        if self.status is Status.OFFLINE:
            return False
        return None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "instance_id": self.instance_id,
            "status": self.status.value,
            "online": self.online,
            "checked_at": rfc3339(self.checked_at),
            "api": self.api,
            "request_id": self.request_id,
            "attempts": self.attempts,
            "error": self.error,
            "confirmed": self.confirmed,
        }

    def to_json(self) -> bytes:
        """One NDJSON line, newline included."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
