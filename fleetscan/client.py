"""The OnsMqtt API client: one signed attempt of each session call, and its answer.

Each call signs afresh (new nonce and timestamp), sends ``POST /`` with every
parameter in the query string and an empty body, as the official SDK does, and reads
the answer. Whatever goes wrong comes out as an `ApiError` subclass: error answers
through `errors.api_error`, aiohttp's exceptions through `_no_answer` (the one place
they are mapped), unreadable answers as a TransientError ``MalformedResponse``.
Retrying and pacing are not done here (see `retry` and `limiter`).
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp
import orjson
from yarl import URL

from fleetscan import __version__
from fleetscan.credentials import (
    Credentials,
    CredentialsProvider,
    StaticCredentials,
    resolve_credentials,
)
from fleetscan.errors import ApiError, UsageError, api_error
from fleetscan.limits import API_VERSION, BATCH_API, BATCH_SIZE, SINGLE_API
from fleetscan.redaction import redactor
from fleetscan.signing import (
    EMPTY_SHA256,
    V3_ALGORITHM,
    V3_SIGNED_HEADERS,
    canonical_query,
    format_timestamp,
    percent_encode,
    sign_v1,
    v3_canonical_request,
    v3_signature,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY_BYTES",
    "TIMEOUT_CODE",
    "BatchAnswer",
    "OnsMqttClient",
    "SessionAnswer",
    "check_endpoint",
    "connect",
    "endpoint_for_region",
    "make_ssl_context",
]

# Seconds one attempt may take, connection and body included.
DEFAULT_TIMEOUT = 10.0
# An answer is a few hundred bytes; reading stops here so a broken or hostile server
# cannot make us buffer without end.
MAX_BODY_BYTES = 1 << 20
# Throttled answers may say how long to back off, in milliseconds.
RETRY_AFTER_HEADER = "x-acs-retry-after"
MALFORMED: Final = "MalformedResponse"
# An attempt with no complete answer in time. The server may still have answered, and
# billed, it: the summary counts these apart.
TIMEOUT_CODE: Final = "Timeout"
# How much of an unreadable body is searched for secrets before a snippet is shown.
_REDACT_WINDOW = 16 * 1024

_USER_AGENT = f"fleetscan/{__version__}"
# V3 headers fleetscan signs, sorted; with an STS token, that header too.
_V3_NAMES: tuple[str, ...] = V3_SIGNED_HEADERS
_V3_NAMES_STS = tuple(sorted((*_V3_NAMES, "x-acs-security-token")))
_V3_SIGNED = ";".join(_V3_NAMES)
_V3_SIGNED_STS = ";".join(_V3_NAMES_STS)
# ClientIdList.<i> in canonical (byte) order for each batch size: 1, 10, 2, 3 ...
_BATCH_ORDER = tuple(tuple(sorted(range(1, n + 1), key=str)) for n in range(BATCH_SIZE + 1))
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


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


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _uuid_nonce() -> str:
    return uuid.uuid4().hex


class OnsMqttClient:
    """Calls QuerySessionByClientId and BatchQuerySessionByClientIds, one attempt each.

    The session is the caller's (one for the whole scan; closing it is the caller's
    job). Credentials are fetched before every attempt, so refreshed STS tokens are
    picked up. Every failure raises an `ApiError` subclass::

        async with aiohttp.ClientSession() as session:
            client = OnsMqttClient(
                session=session,
                credentials=StaticCredentials(Credentials(access_key_id=..., ...)),
                instance_id="mqtt-cn-0pp12gl0000",
                endpoint=endpoint_for_region("cn-hangzhou"),
            )
            answer = await client.query_session("GID_test@@@device-1")
            print(answer.online, answer.request_id)
            batch = await client.batch_query_sessions(["GID_a@@@d1", "GID_a@@@d2"])
            print(batch.statuses)
    """

    __slots__ = (
        "_base",
        "_clock",
        "_credentials",
        "_host",
        "_instance_id",
        "_instance_query",
        "_nonce",
        "_session",
        "_signature",
        "_timeout",
        "_timeout_s",
        "_ts_second",
        "_ts_text",
    )

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        credentials: CredentialsProvider,
        instance_id: str,
        endpoint: str,
        signature: Literal["v3", "v1"] = "v3",
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = _utc_now,
        nonce: Callable[[], str] = _uuid_nonce,
    ) -> None:
        if signature not in ("v3", "v1"):
            raise UsageError(f"signature must be v3 or v1, not {signature!r}")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, not {timeout!r}")
        url = URL(check_endpoint(endpoint))
        self._session = session
        self._credentials = credentials
        self._instance_id = instance_id
        self._signature = signature
        self._clock = clock
        self._nonce = nonce
        self._timeout_s = float(timeout)
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        # Precomputed per client: the URL up to "?", the Host header it implies (what
        # V3 signs and what we send), and the encoded InstanceId query pair.
        self._base = f"{url.scheme}://{url.host_port_subcomponent}/?"
        self._host = url.host_port_subcomponent or ""
        self._instance_query = f"InstanceId={percent_encode(instance_id)}"
        # The formatted timestamp, reused within its second.
        self._ts_second = -1
        self._ts_text = ""

    def __repr__(self) -> str:
        return (
            f"OnsMqttClient(endpoint={self._base[:-1]!r}, instance_id={self._instance_id!r}, "
            f"signature={self._signature!r})"
        )

    async def query_session(self, client_id: str) -> SessionAnswer:
        """Whether ``client_id`` is online now (real time)."""
        query = f"ClientId={percent_encode(client_id)}&{self._instance_query}"
        data = await self._call(SINGLE_API, query, {"ClientId": client_id}, "OnlineStatus")
        online = data["OnlineStatus"]
        if type(online) is not bool:
            raise _malformed(200, f"OnlineStatus is {_kind(online)}, not a boolean")
        return SessionAnswer(online=online, request_id=_text(data.get("RequestId")))

    async def batch_query_sessions(self, client_ids: Sequence[str]) -> BatchAnswer:
        """Online status of up to 10 client IDs in one call (served from a cache).

        The answer is returned as given: an ID the server left out is absent.
        """
        if not 0 < len(client_ids) <= BATCH_SIZE:
            raise ValueError(f"a batch holds 1 to {BATCH_SIZE} client IDs, not {len(client_ids)}")
        query = "&".join(
            [
                *(
                    f"ClientIdList.{i}={percent_encode(client_ids[i - 1])}"
                    for i in _BATCH_ORDER[len(client_ids)]
                ),
                self._instance_query,
            ]
        )
        params = {f"ClientIdList.{i}": cid for i, cid in enumerate(client_ids, 1)}
        data = await self._call(BATCH_API, query, params, "OnlineStatusList")
        return BatchAnswer(
            statuses=_statuses(data["OnlineStatusList"]),
            request_id=_text(data.get("RequestId")),
        )

    # --- one attempt ------------------------------------------------------------------

    async def _call(
        self, action: str, query: str, params: dict[str, str], field: str
    ) -> dict[str, Any]:
        """Sign, send, read; the answer's JSON object, which holds ``field``."""
        credentials = await self._credentials.get()
        if self._signature == "v3":
            headers = self._v3_headers(action, query, credentials)
        else:
            query = self._v1_query(action, params, credentials)
            headers = {"user-agent": _USER_AGENT}
        # encoded=True: the query goes on the wire exactly as it was signed.
        url = URL(self._base + query, encoded=True)
        try:
            async with self._session.post(
                url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get(RETRY_AFTER_HEADER)
                body = await _read_capped(response, status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # from None: aiohttp's messages and reprs can show the URL, which holds the
            # STS token under V1.
            raise _no_answer(exc, self._timeout_s) from None
        secrets = (credentials.security_token, credentials.access_key_secret)
        return _answer(status, body, retry_after, field, secrets=secrets)

    def _timestamp(self) -> str:
        now = self._clock()
        second = int(now.timestamp())
        if second != self._ts_second:
            self._ts_second, self._ts_text = second, format_timestamp(now)
        return self._ts_text

    def _v3_headers(self, action: str, query: str, credentials: Credentials) -> dict[str, str]:
        headers = {
            "host": self._host,
            "x-acs-action": action,
            "x-acs-content-sha256": EMPTY_SHA256,
            "x-acs-date": self._timestamp(),
            "x-acs-signature-nonce": self._nonce(),
            "x-acs-version": API_VERSION,
        }
        names, signed = _V3_NAMES, _V3_SIGNED
        if credentials.security_token:
            headers["x-acs-security-token"] = credentials.security_token
            names, signed = _V3_NAMES_STS, _V3_SIGNED_STS
        canonical = v3_canonical_request("POST", "/", query, headers, names, EMPTY_SHA256)
        signature = v3_signature(canonical, credentials.access_key_secret)
        headers["authorization"] = (
            f"{V3_ALGORITHM} Credential={credentials.access_key_id},"
            f"SignedHeaders={signed},Signature={signature}"
        )
        headers["user-agent"] = _USER_AGENT
        return headers

    def _v1_query(self, action: str, params: dict[str, str], credentials: Credentials) -> str:
        signed = sign_v1(
            "POST",
            {"Action": action, "Version": API_VERSION, "InstanceId": self._instance_id, **params},
            access_key_id=credentials.access_key_id,
            secret=credentials.access_key_secret,
            timestamp=self._clock(),
            nonce=self._nonce(),
            security_token=credentials.security_token,
        )
        return canonical_query(signed)


# --- reading answers ------------------------------------------------------------------


async def _read_capped(response: aiohttp.ClientResponse, status: int) -> bytes:
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
    return _malformed(status, f"the answer is larger than {MAX_BODY_BYTES} bytes")


def _answer(
    status: int,
    body: bytes,
    retry_after: str | None,
    field: str,
    *,
    secrets: Sequence[str | None] = (),
) -> dict[str, Any]:
    """A success answer's JSON object (it holds ``field``); else raise its ApiError.

    An error answer may quote the request back (Alibaba's SignatureDoesNotMatch gives
    the V1 string to sign, which holds the STS token; some proxies echo the URL), so
    ``secrets`` are cut out of every message taken from it.
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
        message = _text(data.get("Message")) if data else None
        raise api_error(
            code,
            redact(message) if message else None,
            http_status=status,
            request_id=_text(data.get("RequestId")) if data else None,
            retry_after=_retry_after(retry_after),
        )
    what = _describe(body, redact) if data is None else f"a JSON object without Code or {field}"
    if status >= 500 or status in (408, 429):
        # A gateway's own error page: its status says enough (503: retry, 429: slow down).
        raise api_error(None, what, http_status=status, retry_after=_retry_after(retry_after))
    raise _malformed(status, what)


def _statuses(entries: object) -> dict[str, bool]:
    if not isinstance(entries, list):
        raise _malformed(200, f"OnlineStatusList is {_kind(entries)}, not a list")
    statuses: dict[str, bool] = {}
    for entry in entries:
        client_id = entry.get("ClientId") if isinstance(entry, dict) else None
        online = entry.get("OnlineStatus") if isinstance(entry, dict) else None
        if not isinstance(client_id, str) or type(online) is not bool:
            raise _malformed(200, "an OnlineStatusList entry lacks ClientId or OnlineStatus")
        statuses[client_id] = online
    return statuses


def _malformed(status: int, why: str) -> ApiError:
    # An unreadable answer says nothing about the request: errors.py maps this code
    # to a transient error whatever the status.
    return api_error(MALFORMED, why, http_status=status)


def _retry_after(header: str | None) -> float | None:
    """``x-acs-retry-after`` (milliseconds) in seconds, when it is a sane number."""
    if header is None:
        return None
    try:
        millis = float(header)
    except ValueError:
        return None
    return millis / 1000.0 if 0.0 <= millis < float("inf") else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _kind(value: object) -> str:
    return "missing" if value is None else type(value).__name__


def _describe(body: bytes, redact: Callable[[str], str]) -> str:
    if not body.strip():
        return "an empty body"
    # Redacted before it is cut short, so no part of a secret is left at the cut.
    snippet = redact(body[:_REDACT_WINDOW].decode("utf-8", "replace"))[:80]
    snippet = "".join(c if c.isprintable() else " " for c in snippet)
    return f"an unreadable body of {len(body)} bytes: {snippet!r}"


def _no_answer(exc: BaseException, timeout: float) -> ApiError:
    """The one place aiohttp's (and the socket's) exceptions become ApiErrors.

    Messages are built here, never copied whole: some aiohttp messages hold the URL.
    """
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it
        code, message = TIMEOUT_CODE, f"no complete answer within {timeout:g} s"
    elif isinstance(exc, aiohttp.ClientSSLError):
        code, message = "TLSError", f"TLS failed: {exc}"
    elif isinstance(exc, aiohttp.ClientOSError):  # connect failures name host:port only
        code, message = "ConnectionError", str(exc)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        code, message = "ConnectionError", "the server closed the connection without answering"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        code, message = "ConnectionError", "the connection dropped in the middle of the answer"
    elif isinstance(exc, aiohttp.ClientResponseError):
        code, message = MALFORMED, f"not a valid HTTP answer ({exc.message})"
    else:
        code, message = "ConnectionError", type(exc).__name__
    return api_error(code, message, http_status=None)


# --- endpoints --------------------------------------------------------------------------


def endpoint_for_region(region: str, *, vpc: bool = False) -> str:
    """``https://onsmqtt.<region>.aliyuncs.com/`` (``onsmqtt-vpc.`` inside a VPC)."""
    if not _REGION.fullmatch(region):
        raise UsageError(f"{region!r} is not a region ID such as cn-hangzhou")
    return f"https://onsmqtt{'-vpc' if vpc else ''}.{region}.aliyuncs.com/"


def check_endpoint(url: str) -> str:
    """The endpoint, normalised to ``scheme://host[:port]/``; UsageError if unusable.

    Only https, except http:// to loopback (127.0.0.0/8, ::1, localhost) for the
    emulator and tests: signatures and STS tokens must not cross a network in clear.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"endpoint {url!r} is not a URL: {exc}") from None
    host = parsed.host
    if not parsed.absolute or not host:
        raise UsageError(f"endpoint {url!r} has no host; give e.g. https://host/")
    if parsed.user is not None or parsed.password is not None:
        raise UsageError("endpoint must not hold a user name or password")
    if parsed.path not in ("", "/") or parsed.raw_query_string or parsed.fragment:
        raise UsageError(f"endpoint {url!r} must be just scheme://host[:port]/")
    scheme = parsed.scheme.lower()
    if scheme == "http" and not _is_loopback(host):
        raise UsageError(f"endpoint {url!r}: http:// is only allowed to loopback; use https://")
    if scheme not in ("https", "http"):
        raise UsageError(f"endpoint {url!r}: the scheme must be https")
    return f"{scheme}://{parsed.host_port_subcomponent}/"


def _is_loopback(host: str) -> bool:
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context: the system's CAs, plus those in ``ca_bundle`` if given.

    Verification is never turned off; a private CA (a proxy, the emulator's --tls)
    is trusted by adding it here.
    """
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UsageError(f"cannot load the CA bundle {ca_bundle}: {reason}") from None
    return context


# --- one call to build it all ----------------------------------------------------------


@asynccontextmanager
async def connect(
    *,
    instance_id: str,
    credentials: Credentials | CredentialsProvider | None = None,
    region: str | None = None,
    endpoint: str | None = None,
    profile: str | None = None,
    signature: Literal["v3", "v1"] = "v3",
    attempt_timeout: float = DEFAULT_TIMEOUT,
    ca_bundle: str | None = None,
) -> AsyncIterator[OnsMqttClient]:
    """An `OnsMqttClient` over one new shared session, closed on exit.

    Without ``credentials`` the chain of `resolve_credentials` finds them (and maybe
    the region); their fetches (ECS role, STS) go over the same session, so
    ``ca_bundle`` is trusted for them too. The endpoint is ``endpoint`` if given, else
    the region's.
    """
    # No connection cap here: the scanner's workers bound what is in flight.
    connector = aiohttp.TCPConnector(ssl=make_ssl_context(ca_bundle), limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        if credentials is None:
            resolved = await resolve_credentials(profile=profile, session=session)
            provider: CredentialsProvider = resolved.provider
            region = region or resolved.region
        elif isinstance(credentials, Credentials):
            provider = StaticCredentials(credentials)
        else:
            provider = credentials
        if endpoint is None:
            if not region:
                raise UsageError(
                    "no region: give --region, set ALIBABA_CLOUD_REGION_ID, or give --endpoint"
                )
            endpoint = endpoint_for_region(region)
        endpoint = check_endpoint(endpoint)
        yield OnsMqttClient(
            session=session,
            credentials=provider,
            instance_id=instance_id,
            endpoint=endpoint,
            signature=signature,
            timeout=attempt_timeout,
        )
