"""The connection to Redis: its URL, the checks at start, and riding out a lost server.

``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS). The password comes
from the URL or, when the URL has none, ``FLEETSCAN_REDIS_PASSWORD`` (so it need not
be on a command line). It is never shown: reprs, errors and logs name the server as
``scheme://host:port/db`` only, and Redis's own messages are scrubbed of it.

At start the link runs the real script once on a probe key: a server that is down,
refuses the password, or refuses scripts that read ``TIME`` (some managed offerings)
fails there, before any call is made (`LimiterUnavailableError`, exit 2). Mid-scan, a
failed call is retried with backoff for up to ``limiter_timeout`` seconds of outage, and
the pacers send nothing meanwhile (an unshared full rate could break the account's
budget); past it, `LimiterLostError` (a graceful stop, exit 3).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from fleetscan.errors import LimiterLostError, LimiterUnavailableError, UsageError
from fleetscan.redis_pacer.script import SCRIPT, script_args

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PASSWORD_ENV",
    "LimiterUrl",
    "RedisLink",
    "parse_limiter_url",
]

log = logging.getLogger("fleetscan")

PASSWORD_ENV = "FLEETSCAN_REDIS_PASSWORD"  # noqa: S105 - a name, not a password
# How long the pacers wait for a lost Redis before the scan stops (--limiter-timeout).
DEFAULT_TIMEOUT_S = 60.0
# One Redis command never waits longer than this, so an outage is noticed.
SOCKET_TIMEOUT_S = 2.0
# Backoff between attempts while Redis is lost.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0

_PORT = re.compile(r"\d{1,5}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterUrl:
    """A checked limiter URL: ``url`` without credentials, ``shown`` for messages."""

    url: str
    shown: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_limiter_url(url: str, *, environ: Mapping[str, str] | None = None) -> LimiterUrl:
    """Check ``url`` and take its credentials apart; a UsageError that never echoes it."""
    env = os.environ if environ is None else environ
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise UsageError(
            "the limiter is redis://[user:password@]host:port/db or rediss://...: "
            "that URL cannot be read"
        ) from None
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError(
            "the limiter is redis://[user:password@]host:port/db or rediss://... (TLS), "
            f"not {parts.scheme or 'a URL without a scheme'}://"
        )
    if not host:
        raise UsageError("the limiter URL names no host: redis://host:port/db")
    if parts.query or parts.fragment:
        # redis-py would take ?ssl_cert_reqs=none and the like from it: TLS is always
        # verified here (a private CA is a ca_bundle, --ca-bundle).
        raise UsageError(
            "the limiter URL takes no ?parameters: redis://[user:password@]host:port/db"
        )
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise UsageError(
            f"the limiter URL's database is a number (redis://host:port/0), not {db!r}"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else env.get(PASSWORD_ENV) or None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    shown = f"{parts.scheme}://{netloc}/{db or '0'}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return LimiterUrl(url=bare, shown=shown, username=username, password=password)


class RedisLink:
    """One Redis client and the pacing script on it; see the module docstring.

    Build it with ``await RedisLink.connect(url)``; ``run`` calls the script, riding
    out an outage of up to ``limiter_timeout`` seconds. ``clock`` and ``sleep`` time the
    outage only, never a permit.
    """

    __slots__ = (
        "_client",
        "_clock",
        "_down_since",
        "_lost",
        "_password",
        "_script",
        "_sleep",
        "calls",
        "limiter_timeout",
        "shown",
    )

    def __init__(
        self,
        client: Any,
        *,
        shown: str,
        password: str | None = None,
        limiter_timeout: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not limiter_timeout > 0:
            raise UsageError(f"the limiter timeout must be positive, not {limiter_timeout!r}")
        self._client = client
        self._script = client.register_script(SCRIPT)
        self.shown = shown
        self._password = password
        self.limiter_timeout = float(limiter_timeout)
        self._clock = clock
        self._sleep = sleep
        # Clock time the current outage began, None while Redis answers.
        self._down_since: float | None = None
        # Set once the outage outlasted the timeout: every later call fails at once.
        self._lost: str | None = None
        # Round trips to Redis (script calls, retries included).
        self.calls = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        limiter_timeout: float = DEFAULT_TIMEOUT_S,
        environ: Mapping[str, str] | None = None,
        ca_bundle: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        probe_key: str = "{fleetscan}:probe",
    ) -> RedisLink:
        """Connect and check that the script runs; LimiterUnavailableError if not.

        ``rediss://`` verifies the server's certificate and name, always; ``ca_bundle``
        (a PEM file) adds trusted CAs, as ``--ca-bundle`` does for the API.
        """
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise UsageError(
                "a Redis limiter needs the redis extra: pip install 'fleetscan[redis]'"
            ) from None
        parsed = parse_limiter_url(url, environ=environ)
        tls: dict[str, Any] = {}
        if parsed.url.startswith("rediss:"):
            # Spelled out: redis-py 5 did not check the host name by default.
            tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if ca_bundle is not None:
                tls["ssl_ca_certs"] = ca_bundle
        client = aioredis.Redis.from_url(
            parsed.url,
            username=parsed.username,
            password=parsed.password,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            # One attempt per command: this link decides when to try again.
            retry=Retry(NoBackoff(), 0),
            **tls,
        )
        link = cls(
            client,
            shown=parsed.shown,
            password=parsed.password,
            limiter_timeout=limiter_timeout,
            clock=clock,
            sleep=sleep,
        )
        try:
            await link._script(
                keys=[probe_key + ":aimd", probe_key],
                args=script_args(want=0, qps=2.0, adaptive=False, answers=0, throttled=0),
            )
        except Exception as exc:  # any failure here means "cannot use it"
            await link.aclose()
            raise LimiterUnavailableError(
                f"the shared limiter {parsed.shown} cannot be used: {link._reason(exc)}"
            ) from None
        return link

    async def run(self, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        """Call the script; while Redis is lost, retry until ``limiter_timeout`` of outage."""
        from redis.exceptions import RedisError

        delay = RETRY_FIRST_S
        while True:
            if self._lost is not None:
                raise LimiterLostError(self._lost)
            self.calls += 1
            try:
                reply = await self._script(keys=keys, args=args)
            except (RedisError, OSError) as exc:
                now = self._clock()
                if self._down_since is None:
                    self._down_since = now
                    log.warning(
                        "the shared limiter %s is unreachable (%s): sending nothing until "
                        "it is back, for up to %g s",
                        self.shown,
                        self._reason(exc),
                        self.limiter_timeout,
                    )
                remaining = self.limiter_timeout - (now - self._down_since)
                if remaining <= 0:
                    self._lost = (
                        f"the shared limiter {self.shown} was unreachable for "
                        f"{self.limiter_timeout:g} s ({self._reason(exc)}): "
                        "the scan stops, resumable"
                    )
                    raise LimiterLostError(self._lost) from None
                await self._sleep(min(delay, remaining))
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            if self._down_since is not None:
                log.warning(
                    "the shared limiter %s is back after %.1f s",
                    self.shown,
                    self._clock() - self._down_since,
                )
                self._down_since = None
            return [int(x) for x in cast("list[Any]", reply)]

    def _reason(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if self._password:
            text = text.replace(self._password, "<redacted>")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisLink({self.shown})"
