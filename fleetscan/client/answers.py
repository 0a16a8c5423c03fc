"""Reading an answer: the capped body, then its JSON, into a value or an `ApiError`.

Error answers go through `errors.api_error` by their ``Code``; an answer that cannot
be read comes out as a TransientError ``MalformedResponse``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from fleetscan.errors import ApiError, api_error
from fleetscan.redaction import redactor

__all__ = [
    "MALFORMED",
    "MAX_BODY_BYTES",
    "BatchAnswer",
    "SessionAnswer",
    "answer_data",
    "malformed",
    "parse_statuses",
    "read_capped",
    "retry_after_seconds",
    "text_or_none",
]

# An answer is a few hundred bytes; reading stops here so a broken or hostile server
# cannot make us buffer without end.
MAX_BODY_BYTES = 1 << 20
MALFORMED: Final = "MalformedResponse"
# How much of an unreadable body is searched for secrets before a snippet is shown.
REDACT_WINDOW: Final = 16 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionAnswer:
    """QuerySessionByClientId's answer."""

    online: bool
    request_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchAnswer:
    """BatchQuerySessionByClientIds' answer: online status by client ID, as answered."""

    statuses: dict[str, bool]
    request_id: str | None


async def read_capped(response: aiohttp.ClientResponse, status: int) -> bytes:
    """The body, or a MalformedResponse once it passes MAX_BODY_BYTES."""
    length = response.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise _too_large(response, status)
    chunks: list[bytes] = []
    size = 0
    # Read to EOF under the cap rather than trust Content-Length: a compressed body grows.
    while chunk := await response.content.read(MAX_BODY_BYTES + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(response, status)
    return b"".join(chunks)


def _too_large(response: aiohttp.ClientResponse, status: int) -> ApiError:
    response.close()  # drop the connection rather than drain the rest
    return malformed(status, f"the answer is larger than {MAX_BODY_BYTES} bytes")


def answer_data(
    status: int,
    body: bytes,
    retry_after: str | None,
    field: str,
    *,
    secrets: Sequence[str | None] = (),
) -> dict[str, Any]:
    """A success answer's JSON object (it holds ``field``); else raise its ApiError.

    ``secrets`` are cut out of every message taken from an error answer (see
    `redaction`).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        data = None
    elif status == 200 and field in data:
        return data
    redact = redactor(secrets)
    code = data.get("Code") if data is not None else None
    if isinstance(code, str) and code:
        message = text_or_none(data.get("Message")) if data else None
        raise api_error(
            code,
            redact(message) if message else None,
            http_status=status,
            request_id=text_or_none(data.get("RequestId")) if data else None,
            retry_after=retry_after_seconds(retry_after),
        )
    what = _describe(body, redact) if data is None else f"a JSON object without Code or {field}"
    if status >= 500 or status in (408, 429):
        # A gateway's own error page: its status says enough (503: retry, 429: slow down).
        raise api_error(
            None, what, http_status=status, retry_after=retry_after_seconds(retry_after)
        )
    raise malformed(status, what)


def parse_statuses(entries: object) -> dict[str, bool]:
    """OnlineStatusList as ``{client ID: online}``; MalformedResponse if it is not one."""
    if not isinstance(entries, list):
        raise malformed(200, f"OnlineStatusList is {kind(entries)}, not a list")
    statuses: dict[str, bool] = {}
    for entry in entries:
        client_id = entry.get("ClientId") if isinstance(entry, dict) else None
        online = entry.get("OnlineStatus") if isinstance(entry, dict) else None
        if not isinstance(client_id, str) or type(online) is not bool:
            raise malformed(200, "an OnlineStatusList entry lacks ClientId or OnlineStatus")
        statuses[client_id] = online
    return statuses


def malformed(status: int, why: str) -> ApiError:
    # An unreadable answer says nothing about the request: errors.py maps this code
    # to a transient error whatever the status.
    return api_error(MALFORMED, why, http_status=status)


def retry_after_seconds(header: str | None) -> float | None:
    """``x-acs-retry-after`` (milliseconds) in seconds, when it is a sane number."""
    if header is None:
        return None
    try:
        millis = float(header)
    except ValueError:
        return None
    return millis / 1000.0 if 0.0 <= millis < float("inf") else None


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def kind(value: object) -> str:
    """What a JSON value is, for a message: ``missing`` for None."""
    return "missing" if value is None else type(value).__name__


def _describe(body: bytes, redact: Callable[[str], str]) -> str:
    if not body.strip():
        return "an empty body"
    # Redacted before it is cut short, so no part of a secret is left at the cut.
    snippet = redact(body[:REDACT_WINDOW].decode("utf-8", "replace"))[:80]
    snippet = "".join(c if c.isprintable() else " " for c in snippet)
    return f"an unreadable body of {len(body)} bytes: {snippet!r}"
