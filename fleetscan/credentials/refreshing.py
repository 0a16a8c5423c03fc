"""The provider of temporary credentials: fetched anew before they expire, once for all.

`RefreshingCredentials` wraps any fetch (ECS metadata, a credentials URI, an STS role
assumption). One fetch at a time (single flight): callers that find the credentials
due for refresh while a fetch is under way keep using the current ones until half
the margin is left, and wait for the fetch after that (or on the first): a call
signed with them still reaches the server well before they expire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fleetscan.credentials.value import Credentials
from fleetscan.errors import AccountError, ApiError, CredentialsError

__all__ = [
    "CREDENTIALS_EXPIRED",
    "REFRESH_MARGIN",
    "RETRY_INTERVAL",
    "Margin",
    "RefreshingCredentials",
    "utcnow",
]

logger = logging.getLogger("fleetscan")

# Temporary credentials are fetched again this long before they expire.
REFRESH_MARGIN = timedelta(minutes=5)
# After a failed refresh, or one that brought credentials inside the margin, wait this
# long (at most until expiry) before asking again rather than asking on every call.
RETRY_INTERVAL = timedelta(minutes=1)
# fleetscan's code for credentials that expired and could not be fetched again.
CREDENTIALS_EXPIRED = "CredentialsExpired"

# The margin: fixed, or a function of the lifetime the fetch brought.
Margin = timedelta | Callable[[timedelta], timedelta]


def utcnow() -> datetime:
    return datetime.now(UTC)


class RefreshingCredentials:
    """A provider for temporary credentials: fetches anew shortly before they expire.

    When a refresh fails but the current credentials have not expired yet, they are
    served (with a logged warning) and the refresh is retried later. Once they have
    expired, a failed refresh raises: the fetch's own `ApiError` (an STS refusal), or
    an `AccountError` ``CredentialsExpired``, so that a scan stops rather than sends
    calls that must fail. A failed first fetch raises the fetch's error as it is.
    """

    __slots__ = (
        "_clock",
        "_current",
        "_fetch",
        "_lock",
        "_margin",
        "_refresh_at",
        "_serve_until",
        "_source",
    )

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Credentials]],
        *,
        source: str,
        clock: Callable[[], datetime] = utcnow,
        margin: Margin = REFRESH_MARGIN,
    ) -> None:
        self._fetch = fetch
        self._source = source
        self._clock = clock
        self._margin = margin
        # The credentials last fetched, None before the first fetch.
        self._current: Credentials | None = None
        # When the next get() must fetch; meaningless while _current is None.
        self._refresh_at = datetime.min.replace(tzinfo=UTC)
        # While a refresh is under way, the current credentials are served until then.
        self._serve_until = datetime.min.replace(tzinfo=UTC)
        # Held for the length of one fetch: the single-flight guard.
        self._lock = asyncio.Lock()

    async def get(self) -> Credentials:
        current = self._current
        if current is not None:
            now = self._clock()
            if now < self._refresh_at:
                return current
            # A refresh is under way: what we have is still good, so no call waits.
            if self._lock.locked() and now < self._serve_until:
                return current
        async with self._lock:
            # Another task may have refreshed while this one waited for the lock.
            current = self._current
            now = self._clock()
            if current is not None and now < self._refresh_at:
                return current
            return await self._refresh(current, now)

    async def _refresh(self, current: Credentials | None, now: datetime) -> Credentials:
        try:
            fresh = await self._fetch()
            if fresh.expiration is not None and fresh.expiration <= self._clock():
                raise CredentialsError(f"{self._source}: credentials expired at {fresh.expiration}")
        except (CredentialsError, ApiError) as exc:
            if current is None:
                raise
            now = self._clock()
            if _expired(current, now):
                if isinstance(exc, ApiError):
                    raise
                raise AccountError(
                    CREDENTIALS_EXPIRED,
                    f"the credentials from {self._source} expired at {current.expiration} "
                    f"and could not be fetched again: {exc}",
                ) from None
            logger.warning(
                "could not refresh credentials (%s); using the current ones until %s",
                exc,
                current.expiration,
            )
            assert current.expiration is not None  # an unexpiring one is never refreshed
            self._refresh_at = min(now + RETRY_INTERVAL, current.expiration)
            return current
        now = self._clock()
        self._current = fresh
        self._refresh_at, self._serve_until = _refresh_times(fresh.expiration, now, self._margin)
        return fresh

    def __repr__(self) -> str:
        expiration = None if self._current is None else self._current.expiration
        return f"RefreshingCredentials(source={self._source!r}, expiration={expiration!r})"


def _expired(credentials: Credentials, now: datetime) -> bool:
    return credentials.expiration is not None and credentials.expiration <= now


def _refresh_times(
    expiration: datetime | None, now: datetime, margin: Margin
) -> tuple[datetime, datetime]:
    """When to refresh, and until when to serve these while a refresh is under way."""
    if expiration is None:
        never = datetime.max.replace(tzinfo=UTC)
        return never, never
    before = margin if isinstance(margin, timedelta) else margin(expiration - now)
    due = expiration - before
    if due > now:
        return due, expiration - before / 2
    # Credentials already inside the margin (the server has not rotated them yet) are
    # used for a while rather than fetched again on every call, but never past expiry.
    return min(now + RETRY_INTERVAL, expiration), expiration
