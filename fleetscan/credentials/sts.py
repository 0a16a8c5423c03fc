"""The STS client: role assumption (``AssumeRole``) and OIDC (``AssumeRoleWithOIDC``).

Facts in ``onsmqtt-api.md`` §7.1. Both are RPC calls to STS ``2015-04-01`` sent as
``POST /`` with every parameter in a form body, so no token (the source's STS token,
the OIDC token) is ever in a URL. ``AssumeRole`` is signed V1 with the source
credentials (`fleetscan.signing`); ``AssumeRoleWithOIDC`` is anonymous.

Each call is retried on STS throttling (``Throttling.User``) and transient faults
with `fleetscan.retry`'s policy. Anything else STS answers (a role that does not
exist, a token it does not trust) is an `AccountError` carrying STS's code and
message, the secrets the request held cut out of it: every later call would fail the
same way, so a scan stops (exit 3). So does a throttling or an outage that outlasts
the retries: ``AccountError`` here means "no credentials to sign with".

Where STS is: `sts_endpoint` (``ALIBABA_CLOUD_STS_ENDPOINT``, else the region's from
``ALIBABA_CLOUD_STS_REGION``, else the global ``sts.aliyuncs.com``). HTTPS only,
except loopback (the emulator).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from fleetscan.credentials.fetchers import borrowed_session, temporary_credentials
from fleetscan.credentials.value import Credentials, CredentialsProvider, account_of_role
from fleetscan.endpoints import check_endpoint
from fleetscan.errors import (
    AccountError,
    ApiError,
    ResignError,
    ThrottledError,
    TransientError,
    UsageError,
    api_error,
)
from fleetscan.redaction import redactor
from fleetscan.retry import RetryPolicy, call_with_retry
from fleetscan.signing import canonical_query, format_timestamp, sign_v1

__all__ = [
    "DEFAULT_DURATION_SECONDS",
    "GLOBAL_STS_ENDPOINT",
    "OIDC_TOKEN_UNREADABLE",
    "STS_REFRESH_MARGIN",
    "STS_RETRY",
    "STS_SLOW_SECONDS",
    "STS_TIMEOUT",
    "STS_VERSION",
    "StsClient",
    "StsEndpoint",
    "default_session_name",
    "sts_endpoint",
    "sts_margin",
]

logger = logging.getLogger("fleetscan")

STS_VERSION: Final = "2015-04-01"
# In mainland China: from elsewhere it may be slow or time out (§7.1).
GLOBAL_STS_ENDPOINT: Final = "https://sts.aliyuncs.com/"
# Asked for when a profile says nothing (STS's own default; 900 is the minimum).
DEFAULT_DURATION_SECONDS = 3600
# Alibaba's tools refresh this long before Expiration ...
STS_REFRESH_MARGIN = timedelta(minutes=15)
# ... which is a quarter of the default hour; shorter lifetimes keep that share.
_REFRESH_SHARE = 0.25
STS_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5, sock_read=10)
# A call to the global endpoint slower than this earns a hint to pick a nearer one.
STS_SLOW_SECONDS = 3.0
# Throttling and outages are waited out up to a minute, then the assumption fails.
STS_RETRY = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_max=10.0, max_total_delay=60.0)
# fleetscan's code for a token file that cannot be read at a refresh.
OIDC_TOKEN_UNREADABLE: Final = "OIDCTokenFileUnreadable"  # noqa: S105 (a code)
# STS's bounds on an OIDC token (§7.1).
_TOKEN_LENGTHS = range(4, 20_001)
_FORM = "application/x-www-form-urlencoded"
# An answer is under a kilobyte; reading stops past this.
_MAX_BODY = 64 * 1024
_HINT = (
    "; the global STS endpoint sts.aliyuncs.com is in mainland China: set "
    "ALIBABA_CLOUD_STS_REGION (or ALIBABA_CLOUD_STS_ENDPOINT) to a nearer one"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StsEndpoint:
    """Where STS is (``scheme://host[:port]/``), what chose it, and whether it is the
    global endpoint, the one that may be far away."""

    url: str
    chosen_by: str
    is_global: bool = False


def sts_endpoint(env: Mapping[str, str]) -> StsEndpoint:
    """The STS endpoint the environment asks for; `UsageError` if it is unusable."""

    named = env.get("ALIBABA_CLOUD_STS_ENDPOINT", "").strip()
    if named:
        # Alibaba's tools take a host name; a URL is fine too (the emulator's is http).
        url = named if "://" in named else f"https://{named}"
        try:
            return StsEndpoint(url=check_endpoint(url), chosen_by="ALIBABA_CLOUD_STS_ENDPOINT")
        except UsageError as exc:
            raise UsageError(f"ALIBABA_CLOUD_STS_ENDPOINT: {exc}") from None
    region = env.get("ALIBABA_CLOUD_STS_REGION", "").strip()
    if region:
        vpc = env.get("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "").strip().lower() == "true"
        url = f"https://sts{'-vpc' if vpc else ''}.{region}.aliyuncs.com"
        try:
            return StsEndpoint(url=check_endpoint(url), chosen_by="ALIBABA_CLOUD_STS_REGION")
        except UsageError:
            raise UsageError(
                f"ALIBABA_CLOUD_STS_REGION {region!r} is not a region ID such as cn-hangzhou"
            ) from None
    return StsEndpoint(url=GLOBAL_STS_ENDPOINT, chosen_by="default", is_global=True)


def sts_margin(lifetime: timedelta) -> timedelta:
    """How long before expiry to refresh credentials that live ``lifetime``."""
    return min(STS_REFRESH_MARGIN, lifetime * _REFRESH_SHARE)


def default_session_name(clock: Callable[[], datetime]) -> str:
    """``fleetscan-<unix seconds>``: STS allows 2-64 of ``[A-Za-z0-9.@_-]``."""
    return f"fleetscan-{int(clock().timestamp())}"


def _uuid_nonce() -> str:
    return uuid.uuid4().hex


class StsClient:
    """Calls STS at one endpoint; each method returns fresh temporary `Credentials`.

    ``session`` is borrowed (left open); without one each call opens its own, which
    costs nothing at one call an hour. ``clock`` signs the timestamp; ``sleep`` waits
    between retries; ``monotonic`` times calls for the slow-endpoint hint.
    """

    __slots__ = (
        "_clock",
        "_endpoint",
        "_monotonic",
        "_nonce",
        "_retry",
        "_session",
        "_sleep",
        "_slow_seconds",
        "_warned",
    )

    def __init__(
        self,
        endpoint: StsEndpoint,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        nonce: Callable[[], str] = _uuid_nonce,
        retry: RetryPolicy = STS_RETRY,
        monotonic: Callable[[], float] = time.monotonic,
        slow_seconds: float = STS_SLOW_SECONDS,
    ) -> None:
        self._endpoint = endpoint
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._nonce = nonce
        self._retry = retry
        self._monotonic = monotonic
        self._slow_seconds = slow_seconds
        # The slow-endpoint hint is given once per client.
        self._warned = False

    def __repr__(self) -> str:
        return f"StsClient(endpoint={self._endpoint.url!r})"

    async def assume_role(
        self,
        source: CredentialsProvider,
        *,
        role_arn: str,
        session_name: str,
        duration_seconds: int = DEFAULT_DURATION_SECONDS,
        policy: str | None = None,
        external_id: str | None = None,
    ) -> Credentials:
        """``AssumeRole`` signed V1 with ``source``'s current credentials."""
        params = {
            "Action": "AssumeRole",
            "Version": STS_VERSION,
            "RoleArn": role_arn,
            "RoleSessionName": session_name,
            "DurationSeconds": str(duration_seconds),
        }
        if policy:
            params["Policy"] = policy
        if external_id:
            params["ExternalId"] = external_id

        async def attempt() -> Credentials:
            # Asked at each attempt: the source may itself be refreshing (a chain).
            key = await source.get()
            signed = sign_v1(
                "POST",
                params,
                access_key_id=key.access_key_id,
                secret=key.access_key_secret,
                timestamp=self._clock(),
                nonce=self._nonce(),
                security_token=key.security_token,
            )
            secrets = (key.access_key_secret, key.security_token)
            return await self._call(signed, role_arn, secrets)

        return await self._with_retry(attempt, "AssumeRole", role_arn)

    async def assume_role_with_oidc(
        self,
        *,
        role_arn: str,
        provider_arn: str,
        token_file: Path,
        session_name: str,
        duration_seconds: int = DEFAULT_DURATION_SECONDS,
        policy: str | None = None,
    ) -> Credentials:
        """``AssumeRoleWithOIDC``, anonymous, with the token ``token_file`` holds now."""
        token = read_oidc_token(token_file)  # again at every refresh: it is rotated
        params = {
            "Action": "AssumeRoleWithOIDC",
            "Version": STS_VERSION,
            "Format": "JSON",
            "Timestamp": format_timestamp(self._clock()),
            "RoleArn": role_arn,
            "OIDCProviderArn": provider_arn,
            "OIDCToken": token,
            "RoleSessionName": session_name,
            "DurationSeconds": str(duration_seconds),
        }
        if policy:
            params["Policy"] = policy

        async def attempt() -> Credentials:
            return await self._call(params, role_arn, (token,))

        return await self._with_retry(attempt, "AssumeRoleWithOIDC", role_arn)

    async def _with_retry(
        self, attempt: Callable[[], Awaitable[Credentials]], action: str, role_arn: str
    ) -> Credentials:
        try:
            credentials, _ = await call_with_retry(attempt, policy=self._retry, sleep=self._sleep)
        except (ThrottledError, TransientError, ResignError) as exc:
            # Waited out as long as the policy allows: there is nothing to sign with.
            raise AccountError(
                exc.code,
                f"STS {action} of {role_arn} failed after {exc.attempts} "
                f"attempt{'s' if exc.attempts != 1 else ''}: {exc.message}",
                http_status=exc.http_status,
                request_id=exc.request_id,
            ) from None
        logger.debug(
            "STS %s of %s: key %s until %s",
            action,
            role_arn,
            credentials.access_key_id,
            credentials.expiration,
        )
        return credentials

    async def _call(
        self, params: Mapping[str, str], role_arn: str, secrets: tuple[str | None, ...]
    ) -> Credentials:
        """One attempt: POST the form, read the answer; raise an `ApiError` on failure."""
        endpoint = self._endpoint
        action = params["Action"]
        body = canonical_query(params).encode()
        started = self._monotonic()
        try:
            async with (
                borrowed_session(self._session) as session,
                session.post(
                    endpoint.url,
                    data=body,
                    headers={"Content-Type": _FORM},
                    timeout=STS_TIMEOUT,
                    allow_redirects=False,
                ) as response,
            ):
                status = response.status
                raw = b""
                # To the end, but no further than the cap: more is not STS.
                while len(raw) <= _MAX_BODY and (
                    chunk := await response.content.read(_MAX_BODY + 1 - len(raw))
                ):
                    raw += chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            hint = _HINT if endpoint.is_global else ""
            # Built here, never copied: aiohttp's messages may quote the URL.
            if isinstance(exc, TimeoutError):
                code, what = "Timeout", f"no answer within {STS_TIMEOUT.total:g} s"
            elif isinstance(exc, aiohttp.ClientSSLError):
                # Account-wide, as for the API: a certificate will not verify on a retry.
                code, what = "TLSError", f"TLS failed: {exc}"
            elif isinstance(exc, aiohttp.ClientConnectorError):
                code, what = "ConnectionError", f"cannot connect ({exc.os_error.strerror})"
            else:
                code, what = "ConnectionError", type(exc).__name__
            raise api_error(
                code, f"STS at {endpoint.url}: {what}{hint}", http_status=None
            ) from None
        finally:
            self._note_speed(self._monotonic() - started)
        return self._answer(status, raw, action, role_arn, redactor(secrets))

    def _note_speed(self, elapsed: float) -> None:
        if self._endpoint.is_global and not self._warned and elapsed > self._slow_seconds:
            self._warned = True
            logger.warning("STS at %s took %.1f s%s", self._endpoint.url, elapsed, _HINT)

    def _answer(
        self,
        status: int,
        raw: bytes,
        action: str,
        role_arn: str,
        redact: Callable[[str], str],
    ) -> Credentials:
        try:
            data: Any = None if len(raw) > _MAX_BODY else orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            what = f"STS answered HTTP {status} with {len(raw)} bytes that are not JSON"
            raise _refusal(api_error(None, what, http_status=status))
        issued = data.get("Credentials")
        if status == 200 and isinstance(issued, dict):
            credentials = _credentials(issued, f"STS {action} of {role_arn}")
            return dataclasses.replace(credentials, account=account_of_role(role_arn))
        code = data.get("Code")
        message = data.get("Message")
        request_id = data.get("RequestId")
        error = api_error(
            code if isinstance(code, str) and code else None,
            redact(message) if isinstance(message, str) else "",
            http_status=status,
            request_id=request_id if isinstance(request_id, str) else None,
        )
        if isinstance(error, ThrottledError | TransientError | ResignError):
            raise error  # retried (a reused nonce or a stale timestamp: signed afresh once)
        raise AccountError(
            error.code,
            f"STS refused {action} of {role_arn}: {error.message}",
            http_status=status,
            request_id=error.request_id,
        )


def read_oidc_token(path: Path) -> str:
    """The token in ``path``; an `AccountError` when it cannot be read or is no token."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise AccountError(
            OIDC_TOKEN_UNREADABLE, f"cannot read the OIDC token file {path}: {why}"
        ) from None
    if len(token) not in _TOKEN_LENGTHS:
        raise AccountError(
            OIDC_TOKEN_UNREADABLE,
            f"the OIDC token file {path} holds {len(token)} characters, not 4 to 20000",
        )
    return token


def _refusal(error: ApiError) -> ApiError:
    # An unreadable answer: worth retrying when the status says so, else account-wide.
    if isinstance(error, ThrottledError | TransientError):
        return error
    return AccountError(error.code, error.message, http_status=error.http_status)


def _credentials(issued: Mapping[str, Any], where: str) -> Credentials:
    try:
        return temporary_credentials(issued, where)
    except ValueError as exc:
        # Worth another attempt: a 200 without its parts is a server's passing fault.
        raise api_error("MalformedResponse", f"{where}: {exc}", http_status=200) from None
