"""The chain: where credentials are looked for, in the order Alibaba's tools use.

`CHAIN` is an ordered tuple of steps (``onsmqtt-api.md`` §7); each says whether it
applies (`find`: a `Source`, or why not) and the source says how it provides. The
first step that applies wins:

1. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` + ``_SECRET`` (+ ``ALIBABA_CLOUD_SECURITY_TOKEN``);
   Terraform's ``ALICLOUD_ACCESS_KEY`` + ``ALICLOUD_SECRET_KEY`` as a fallback.
2. OIDC: ``ALIBABA_CLOUD_ROLE_ARN``, ``ALIBABA_CLOUD_OIDC_PROVIDER_ARN`` and
   ``ALIBABA_CLOUD_OIDC_TOKEN_FILE`` (RRSA on Kubernetes).
3. The aliyun CLI's ``~/.aliyun/config.json`` (`profiles`).
4. ``~/.alibabacloud/credentials.ini`` (`profiles`).
5. The ECS instance metadata service (a RAM role attached to this machine); off ECS
   it is recorded as tried and the chain goes on.
6. ``ALIBABA_CLOUD_CREDENTIALS_URI``.

No message, repr or log line here ever contains a secret or a token.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from fleetscan.credentials.fetchers import FetchError
from fleetscan.credentials.profiles import HOW_TO, find_cli_profile, find_ini_section
from fleetscan.credentials.refreshing import utcnow
from fleetscan.credentials.sources import (
    METADATA_URL,
    AccessKey,
    Context,
    CredentialsUri,
    EcsRamRole,
    OidcRoleArn,
    Source,
)
from fleetscan.credentials.value import Credentials, ResolvedCredentials
from fleetscan.errors import CredentialsError

__all__ = [
    "CHAIN",
    "OIDC_VARIABLES",
    "ChainStep",
    "resolve_credentials",
]

logger = logging.getLogger("fleetscan")

# What the pod identity webhook of ACK injects (RRSA).
OIDC_VARIABLES = (
    "ALIBABA_CLOUD_ROLE_ARN",
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
)


class ChainStep(Protocol):
    """One place in the chain.

    ``reads_profiles``: the step reads a profile file, so ``--profile`` can be found
    there. ``falls_through``: a `FetchError` while providing is recorded as tried and
    the chain goes on (the metadata service off ECS), instead of being raised.
    """

    @property
    def reads_profiles(self) -> bool: ...

    @property
    def falls_through(self) -> bool: ...

    def find(self, ctx: Context) -> Source | str:
        """The source this step names, or why it does not apply (for the message)."""
        ...


@dataclass(frozen=True, slots=True)
class _EnvironmentKeys:
    reads_profiles = False
    falls_through = False

    def find(self, ctx: Context) -> Source | str:
        # (id, secret, token) variable names: Alibaba's, then the Terraform provider's.
        for id_var, secret_var, token_var in (
            (
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                "ALIBABA_CLOUD_SECURITY_TOKEN",
            ),
            ("ALICLOUD_ACCESS_KEY", "ALICLOUD_SECRET_KEY", "ALICLOUD_SECURITY_TOKEN"),
        ):
            key_id, secret = ctx.env.get(id_var), ctx.env.get(secret_var)
            if key_id and secret:
                where = "environment" if id_var.startswith("ALIBABA") else f"environment ({id_var})"
                creds = Credentials(
                    access_key_id=key_id,
                    access_key_secret=secret,
                    security_token=ctx.env.get(token_var) or None,
                    source=where,
                )
                return AccessKey(where=where, credentials=creds)
            if key_id or secret:
                # Half a pair is a mistake; falling through to another identity would hide it.
                have, missing = (id_var, secret_var) if key_id else (secret_var, id_var)
                raise CredentialsError(f"{have} is set but {missing} is not; set both or neither")
        return "environment (ALIBABA_CLOUD_ACCESS_KEY_ID not set)"


@dataclass(frozen=True, slots=True)
class _EnvironmentOidc:
    reads_profiles = False
    falls_through = False

    def find(self, ctx: Context) -> Source | str:
        unset = [name for name in OIDC_VARIABLES if not ctx.env.get(name)]
        if unset:
            return f"OIDC ({unset[0]} not set)"
        role_arn, provider_arn, token_file = (ctx.env[name] for name in OIDC_VARIABLES)
        return OidcRoleArn(
            where="environment (ALIBABA_CLOUD_ROLE_ARN, OIDC)",
            role_arn=role_arn,
            provider_arn=provider_arn,
            token_file=Path(token_file),
            session_name=ctx.env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME") or None,
        )


@dataclass(frozen=True, slots=True)
class _CliProfile:
    reads_profiles = True
    falls_through = False

    def find(self, ctx: Context) -> Source | str:
        return find_cli_profile(ctx)


@dataclass(frozen=True, slots=True)
class _CredentialsFile:
    reads_profiles = True
    falls_through = False

    def find(self, ctx: Context) -> Source | str:
        return find_ini_section(ctx)


@dataclass(frozen=True, slots=True)
class _EcsMetadata:
    reads_profiles = False
    falls_through = True

    def find(self, ctx: Context) -> Source | str:
        if ctx.metadata_base() is None:
            if ctx.metadata_url is None:
                return "ECS metadata (disabled by the caller)"
            return "ECS metadata (disabled by ALIBABA_CLOUD_ECS_METADATA_DISABLED)"
        role = ctx.env.get("ALIBABA_CLOUD_ECS_METADATA") or None
        return EcsRamRole(where="ECS metadata", role=role, named=False)


@dataclass(frozen=True, slots=True)
class _CredentialsUriVariable:
    reads_profiles = False
    falls_through = False

    def find(self, ctx: Context) -> Source | str:
        uri = ctx.env.get("ALIBABA_CLOUD_CREDENTIALS_URI")
        if not uri:
            return "ALIBABA_CLOUD_CREDENTIALS_URI (not set)"
        return CredentialsUri(where="ALIBABA_CLOUD_CREDENTIALS_URI", uri=uri, named=False)


CHAIN: tuple[ChainStep, ...] = (
    _EnvironmentKeys(),
    _EnvironmentOidc(),
    _CliProfile(),
    _CredentialsFile(),
    _EcsMetadata(),
    _CredentialsUriVariable(),
)


async def resolve_credentials(
    *,
    profile: str | None = None,
    env: Mapping[str, str] = os.environ,
    home: Path | None = None,
    session: aiohttp.ClientSession | None = None,
    metadata_url: str | None = METADATA_URL,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    chain: tuple[ChainStep, ...] = CHAIN,
) -> ResolvedCredentials:
    """Find credentials the way Alibaba's tools do; raise `CredentialsError` if none.

    ``profile`` names a config.json profile or credentials.ini section and, when given
    and found in neither, is an error. ``metadata_url=None`` skips the ECS metadata
    service. ``session``, if given, must outlive the returned provider (refreshes use
    it); without one each fetch opens and closes its own. ``clock`` and ``sleep`` are
    those of refreshes and of STS retries. A role to assume is assumed when the
    credentials are first asked for; a refusal then is an `AccountError`.
    """
    ctx = Context(
        profile=profile,
        env=env,
        home=Path.home() if home is None else home,
        session=session,
        metadata_url=metadata_url,
        clock=clock,
        sleep=sleep,
    )
    tried: list[str] = []
    profiles_read = False
    resolved: ResolvedCredentials | None = None
    for step in chain:
        if profile and profiles_read and not step.reads_profiles:
            raise CredentialsError(f"profile {profile!r} not found; tried: {', '.join(tried)}")
        profiles_read = profiles_read or step.reads_profiles
        found = step.find(ctx)
        if isinstance(found, str):
            tried.append(found)
            continue
        try:
            resolved = await found.provide(ctx)
        except FetchError as exc:
            if not step.falls_through:
                raise
            # Off ECS, or no role attached: the usual case on a laptop, so go on.
            tried.append(f"{exc.place} ({exc.problem})")
            continue
        break
    if resolved is None:
        raise CredentialsError(f"no credentials found; tried: {', '.join(tried)}; {HOW_TO}")
    region = ctx.env.get("ALIBABA_CLOUD_REGION_ID") or resolved.region
    logger.debug("credentials from %s, region %s", resolved.source, region)
    return replace(resolved, region=region)
