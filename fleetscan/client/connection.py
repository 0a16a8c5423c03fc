"""One call to build a client: credentials, endpoint, a verifying TLS context, and
one shared session closed on exit."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import aiohttp

from fleetscan.client.onsmqtt import DEFAULT_TIMEOUT, OnsMqttClient
from fleetscan.credentials import (
    Credentials,
    CredentialsProvider,
    StaticCredentials,
    resolve_credentials,
)
from fleetscan.endpoints import check_endpoint, endpoint_for_region
from fleetscan.errors import UsageError

__all__ = ["connect", "make_ssl_context", "open_session"]


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


@asynccontextmanager
async def open_session(ca_bundle: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    """The one HTTP session of a scan: API calls and credential fetches (STS, ECS)."""
    # No connection cap here: the scanner's workers bound what is in flight.
    connector = aiohttp.TCPConnector(ssl=make_ssl_context(ca_bundle), limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


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
    session: aiohttp.ClientSession | None = None,
) -> AsyncIterator[OnsMqttClient]:
    """An `OnsMqttClient` over one new shared session, closed on exit.

    Without ``credentials`` the chain of `resolve_credentials` finds them (and maybe
    the region); their fetches (ECS role, STS) go over the same session, so
    ``ca_bundle`` is trusted for them too. The endpoint is ``endpoint`` if given, else
    the region's; a given endpoint is checked before any credentials are looked for.
    A ``session`` given (see `open_session`) is used and left open; else one is opened
    with ``ca_bundle`` and closed on exit.
    """
    if endpoint is not None:
        endpoint = check_endpoint(endpoint)
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(open_session(ca_bundle))
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
            endpoint = check_endpoint(endpoint_for_region(region))
        yield OnsMqttClient(
            session=session,
            credentials=provider,
            instance_id=instance_id,
            endpoint=endpoint,
            signature=signature,
            timeout=attempt_timeout,
        )
