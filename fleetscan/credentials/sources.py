"""Sources of credentials: what a variable or a profile names, and how it provides.

A source is found without any network call (the chain and `profiles` build them);
`provide` then turns it into a provider: static keys as they are, an ECS role or a
credentials URI fetched once now (so a machine off ECS is told at once), an STS role
assumption on first use (`RefreshingCredentials` over `StsClient`). Each kind is a
small frozen object with the same interface, so a new kind is one more class, and a
role assumed with another source's credentials (a chain) is composition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from fleetscan.credentials.fetchers import (
    FetchError,
    fetch_metadata,
    fetch_uri,
    metadata_place,
    uri_place,
)
from fleetscan.credentials.refreshing import RefreshingCredentials, utcnow
from fleetscan.credentials.sts import (
    DEFAULT_DURATION_SECONDS,
    StsClient,
    default_session_name,
    read_oidc_token,
    sts_endpoint,
    sts_margin,
)
from fleetscan.credentials.value import Credentials, ResolvedCredentials, StaticCredentials
from fleetscan.errors import AccountError, CredentialsError

__all__ = [
    "METADATA_URL",
    "AccessKey",
    "Context",
    "CredentialsUri",
    "EcsRamRole",
    "OidcRoleArn",
    "RamRoleArn",
    "Source",
]

# The ECS instance metadata service; only reachable from inside an ECS instance.
METADATA_URL = "http://100.100.100.200"


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """The seams of one resolution: where to look, and what to fetch with."""

    profile: str | None = None
    env: Mapping[str, str]
    home: Path
    session: aiohttp.ClientSession | None = None
    metadata_url: str | None = METADATA_URL
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def metadata_base(self) -> str | None:
        """The metadata service's URL, None when it is disabled."""
        if self.env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "").lower() == "true":
            return None
        return None if self.metadata_url is None else self.metadata_url.rstrip("/")

    def sts(self) -> StsClient:
        """A client of the STS endpoint the environment names."""
        return StsClient(
            sts_endpoint(self.env), session=self.session, clock=self.clock, sleep=self.sleep
        )


class Source(Protocol):
    """Somewhere credentials come from. ``where`` names it in messages."""

    @property
    def where(self) -> str: ...

    @property
    def region(self) -> str | None: ...

    async def provide(self, ctx: Context) -> ResolvedCredentials: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessKey:
    """Keys given as they are: an AccessKey pair, or an STS token with its keys."""

    where: str
    region: str | None = None
    credentials: Credentials

    async def provide(self, ctx: Context) -> ResolvedCredentials:
        provider = StaticCredentials(self.credentials)
        return ResolvedCredentials(provider=provider, region=self.region, source=self.where)


@dataclass(frozen=True, slots=True, kw_only=True)
class EcsRamRole:
    """The RAM role of this ECS instance, from the metadata service.

    ``role`` None asks the service which role is attached. ``named`` is True when a
    profile asked for it: a failure is then that profile's error; otherwise it is a
    `FetchError` the chain records before it goes on.
    """

    where: str
    region: str | None = None
    role: str | None = None
    named: bool = True

    async def provide(self, ctx: Context) -> ResolvedCredentials:
        base = ctx.metadata_base()
        if base is None:
            raise CredentialsError(
                f"{self.where} asks for an ECS RAM role, but the metadata service is disabled"
            )
        require_token = ctx.env.get("ALIBABA_CLOUD_IMDSV1_DISABLED", "").lower() == "true"
        role = self.role

        async def fetch() -> Credentials:
            return await fetch_metadata(ctx.session, base, role, require_token=require_token)

        provider = RefreshingCredentials(fetch, source=metadata_place(base), clock=ctx.clock)
        first = await _first(provider, self.where if self.named else None)
        return ResolvedCredentials(provider=provider, region=self.region, source=first.source)


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsUri:
    """A URI answering the metadata service's JSON (``ALIBABA_CLOUD_CREDENTIALS_URI``)."""

    where: str
    region: str | None = None
    uri: str
    named: bool = True

    async def provide(self, ctx: Context) -> ResolvedCredentials:
        uri = self.uri

        async def fetch() -> Credentials:
            return await fetch_uri(ctx.session, uri)

        place = uri_place(uri)
        provider = RefreshingCredentials(fetch, source=place, clock=ctx.clock)
        await _first(provider, self.where if self.named else None)
        return ResolvedCredentials(provider=provider, region=self.region, source=place)


@dataclass(frozen=True, slots=True, kw_only=True)
class RamRoleArn:
    """A RAM role assumed (``AssumeRole``) with the credentials of ``source``.

    ``source`` is any source, another role included (the CLI's ChainableRamRoleArn).
    STS is first called when the credentials are first asked for, so a refused
    assumption reaches a scan as the `AccountError` it is.
    """

    where: str
    region: str | None = None
    source: Source
    role_arn: str
    session_name: str | None = None
    duration_seconds: int = DEFAULT_DURATION_SECONDS
    policy: str | None = None
    external_id: str | None = None

    async def provide(self, ctx: Context) -> ResolvedCredentials:
        inner = await self.source.provide(ctx)
        sts = ctx.sts()
        session_name = self.session_name or _session_name(ctx)

        async def fetch() -> Credentials:
            fresh = await sts.assume_role(
                inner.provider,
                role_arn=self.role_arn,
                session_name=session_name,
                duration_seconds=self.duration_seconds,
                policy=self.policy,
                external_id=self.external_id,
            )
            return _named(fresh, self.where)

        provider = RefreshingCredentials(
            fetch, source=self.where, clock=ctx.clock, margin=sts_margin
        )
        region = self.region or inner.region
        return ResolvedCredentials(provider=provider, region=region, source=self.where)


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcRoleArn:
    """A RAM role assumed with an OIDC token (``AssumeRoleWithOIDC``): RRSA on ACK.

    The token file is read now (a missing one is a credentials error before the
    scan) and again at every refresh, since the cluster rotates it.
    """

    where: str
    region: str | None = None
    role_arn: str
    provider_arn: str
    token_file: Path
    session_name: str | None = None
    duration_seconds: int = DEFAULT_DURATION_SECONDS
    policy: str | None = None

    async def provide(self, ctx: Context) -> ResolvedCredentials:
        try:
            read_oidc_token(self.token_file)
        except AccountError as exc:
            raise CredentialsError(f"{self.where}: {exc.message}") from None
        sts = ctx.sts()
        session_name = self.session_name or _session_name(ctx)

        async def fetch() -> Credentials:
            fresh = await sts.assume_role_with_oidc(
                role_arn=self.role_arn,
                provider_arn=self.provider_arn,
                token_file=self.token_file,
                session_name=session_name,
                duration_seconds=self.duration_seconds,
                policy=self.policy,
            )
            return _named(fresh, self.where)

        provider = RefreshingCredentials(
            fetch, source=self.where, clock=ctx.clock, margin=sts_margin
        )
        return ResolvedCredentials(provider=provider, region=self.region, source=self.where)


async def _first(provider: RefreshingCredentials, named_by: str | None) -> Credentials:
    """The first fetch; a failure is the naming profile's error when there is one."""
    try:
        return await provider.get()
    except FetchError as exc:
        if named_by is None:
            raise
        # Name the profile that sent us there, not only the service that failed.
        raise CredentialsError(f"{named_by}: {exc}") from None


def _session_name(ctx: Context) -> str:
    return ctx.env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME") or default_session_name(ctx.clock)


def _named(credentials: Credentials, where: str) -> Credentials:
    return replace(credentials, source=where)
