"""Fetching temporary credentials over HTTP: the ECS instance metadata service and a
credentials URI (``onsmqtt-api.md`` §7, steps 5 and 6).

`fetch_metadata` asks the metadata service for a session token (IMDSv2 style), then for
the RAM role attached to the instance unless it is known, then for that role's keys.
`fetch_uri` GETs a credentials URI. Both answer with the same JSON object, parsed here
into a `Credentials`; the chain wraps them in a `RefreshingCredentials`.
Failures are `FetchError`s that name the place; no message quotes a secret, a token or
a URI's query string.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from fleetscan.credentials.value import Credentials
from fleetscan.errors import CredentialsError

__all__ = [
    "METADATA_TIMEOUT",
    "METADATA_TOKEN_TTL",
    "URI_TIMEOUT",
    "FetchError",
    "borrowed_session",
    "fetch_metadata",
    "fetch_uri",
    "metadata_place",
    "temporary_credentials",
    "uri_place",
]

# Short, so that a machine outside ECS gives up on 100.100.100.200 within a second.
METADATA_TIMEOUT = aiohttp.ClientTimeout(total=3, connect=1, sock_read=1)
# The official library's values for a credentials URI.
URI_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5, sock_read=10)
# Lifetime asked for the metadata session token (the official library's value).
METADATA_TOKEN_TTL = 21600

_ROLES_PATH = "/latest/meta-data/ram/security-credentials/"
_TOKEN_PATH = "/latest/api/token"  # noqa: S105 (a URL path, not a password)


class FetchError(CredentialsError):
    """A place that could not give credentials, and why; the ECS step records these."""

    def __init__(self, place: str, problem: str) -> None:
        self.place = place
        self.problem = problem
        super().__init__(f"{place}: {problem}")


def metadata_place(base: str) -> str:
    """How messages name the metadata service at ``base``."""
    return f"ECS metadata at {base}"


def uri_place(uri: str) -> str:
    """How messages name a credentials URI: without the parts that may hold a token."""
    return f"credentials URI {_redacted(uri)}"


async def fetch_metadata(
    given: aiohttp.ClientSession | None, base: str, role: str | None, *, require_token: bool
) -> Credentials:
    """Token first (IMDSv2 style), then the role name unless known, then its keys."""
    place = metadata_place(base)
    async with borrowed_session(given) as session:
        ttl = {"X-aliyun-ecs-metadata-token-ttl-seconds": str(METADATA_TOKEN_TTL)}
        status, token = await _call(
            session, "PUT", base + _TOKEN_PATH, ttl, METADATA_TIMEOUT, place
        )
        headers: dict[str, str] = {}
        if status == 200 and token.strip():
            headers["X-aliyun-ecs-metadata-token"] = token.strip()
        elif require_token:
            raise FetchError(place, f"HTTP {status} for a session token, and IMDSv1 is disabled")
        if role is None:
            status, body = await _call(
                session, "GET", base + _ROLES_PATH, headers, METADATA_TIMEOUT, place
            )
            role = body.strip().splitlines()[0].strip() if status == 200 and body.strip() else None
            if role is None:
                raise FetchError(place, f"no RAM role attached to this instance (HTTP {status})")
        url = base + _ROLES_PATH + quote(role, safe="")
        status, body = await _call(session, "GET", url, headers, METADATA_TIMEOUT, place)
    where = f"{place} role {role!r}"
    if status != 200:
        raise FetchError(where, f"HTTP {status}")
    return _temporary(body, where)


async def fetch_uri(given: aiohttp.ClientSession | None, uri: str) -> Credentials:
    """GET the URI; its answer is the same JSON object the metadata service gives."""
    place = uri_place(uri)
    if urlsplit(uri).scheme not in ("http", "https"):
        raise FetchError(place, "not an http or https URL")
    async with borrowed_session(given) as session:
        status, body = await _call(session, "GET", uri, {}, URI_TIMEOUT, place)
    if status != 200:
        raise FetchError(place, f"HTTP {status}")
    return _temporary(body, place)


def _temporary(body: str, where: str) -> Credentials:
    """Parse ``{"Code":"Success","AccessKeyId",...,"Expiration"}``; errors quote no values."""
    try:
        answer: Any = json.loads(body)
    except json.JSONDecodeError:
        raise FetchError(where, "the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise FetchError(where, "the answer is not a JSON object")
    code = answer.get("Code")
    if code != "Success":
        raise FetchError(where, f"answered Code {str(code)[:60]!r}, not 'Success'")
    try:
        return temporary_credentials(answer, where)
    except ValueError as exc:
        raise FetchError(where, str(exc)) from None


def temporary_credentials(answer: Mapping[str, Any], where: str) -> Credentials:
    """``AccessKeyId``, ``AccessKeySecret``, ``SecurityToken`` and ``Expiration`` of an
    answer (the metadata service's, a credentials URI's, STS's ``Credentials``).

    Raises ValueError naming what is missing or wrong, never quoting a value.
    """
    for key in ("AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"):
        if not isinstance(answer.get(key), str) or not answer[key]:
            raise ValueError(f"the answer has no {key}")
    try:
        expiration = datetime.fromisoformat(answer["Expiration"])
    except ValueError:
        raise ValueError("Expiration is not an ISO 8601 time") from None
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=UTC)
    return Credentials(
        access_key_id=answer["AccessKeyId"],
        access_key_secret=answer["AccessKeySecret"],
        security_token=answer["SecurityToken"],
        expiration=expiration,
        source=where,
    )


@asynccontextmanager
async def borrowed_session(
    given: aiohttp.ClientSession | None,
) -> AsyncIterator[aiohttp.ClientSession]:
    """``given`` (left open), or a session of its own for this one fetch."""
    if given is not None:
        yield given
        return
    # Fetches are hours apart, so a session per fetch costs nothing and leaks nothing.
    async with aiohttp.ClientSession() as own:
        yield own


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    place: str,
) -> tuple[int, str]:
    try:
        async with session.request(method, url, headers=headers, timeout=timeouts) as response:
            return response.status, await response.text(errors="replace")
    except TimeoutError:
        raise FetchError(place, "unreachable: timed out") from None
    except aiohttp.ClientConnectorError as exc:
        raise FetchError(
            place, f"unreachable: {exc.os_error.strerror or 'cannot connect'}"
        ) from None
    except aiohttp.ClientError as exc:
        # The class name only: some aiohttp messages quote the URL, query string and all.
        raise FetchError(place, f"unreachable: {type(exc).__name__}") from None


def _redacted(uri: str) -> str:
    """The URI without user, password, query or fragment, any of which may hold a token."""
    try:
        parts = urlsplit(uri)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparseable)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
