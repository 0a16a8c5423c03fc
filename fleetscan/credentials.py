"""Access keys, and where they come from.

`resolve_credentials` walks the chain Alibaba's own tools use (``onsmqtt-api.md`` §7),
first match wins:

1. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` + ``_SECRET`` (+ ``ALIBABA_CLOUD_SECURITY_TOKEN``);
   Terraform's ``ALICLOUD_ACCESS_KEY`` + ``ALICLOUD_SECRET_KEY`` as a fallback.
2. OIDC (``ALIBABA_CLOUD_ROLE_ARN`` & co.): recognised, refused as not supported yet.
3. The aliyun CLI's ``~/.aliyun/config.json`` (modes AK, StsToken, EcsRamRole,
   CredentialsURI).
4. ``~/.alibabacloud/credentials.ini`` (types access_key, sts, ecs_ram_role).
5. The ECS instance metadata service (a RAM role attached to this machine).
6. ``ALIBABA_CLOUD_CREDENTIALS_URI``.

Temporary credentials from 5 and 6 are fetched by `fleetscan.credential_fetchers` and
come wrapped in a `RefreshingCredentials`. No message, repr or log line here ever
contains a secret or a token.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp

from fleetscan.credential_fetchers import (
    FetchError,
    fetch_metadata,
    fetch_uri,
    metadata_place,
    uri_place,
)
from fleetscan.errors import CredentialsError

__all__ = [
    "METADATA_URL",
    "REFRESH_MARGIN",
    "Credentials",
    "CredentialsProvider",
    "RefreshingCredentials",
    "ResolvedCredentials",
    "StaticCredentials",
    "resolve_credentials",
]

logger = logging.getLogger("fleetscan")

# The ECS instance metadata service; only reachable from inside an ECS instance.
METADATA_URL = "http://100.100.100.200"
# Temporary credentials are fetched again this long before they expire.
REFRESH_MARGIN = timedelta(minutes=5)
# After a failed refresh, or one that brought credentials inside the margin, wait this
# long before asking again rather than asking on every call.
RETRY_INTERVAL = timedelta(minutes=1)

_SUPPORTED_CLI_MODES = "AK, StsToken, EcsRamRole or CredentialsURI"
_SUPPORTED_INI_TYPES = "access_key, sts or ecs_ram_role"
_HOW_TO = (
    "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or run `aliyun configure`"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """One access key pair, with an STS token when temporary. The repr hides secrets."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None
    # Where these came from, for messages: "environment", "~/.aliyun/config.json" ...
    source: str = "given"


class CredentialsProvider(Protocol):
    """Anything the client can ask for current credentials before each attempt."""

    async def get(self) -> Credentials: ...


class StaticCredentials:
    """A provider for credentials that never change."""

    __slots__ = ("_credentials",)

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    async def get(self) -> Credentials:
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credentials!r})"


class RefreshingCredentials:
    """A provider for temporary credentials: fetches anew shortly before they expire.

    Callers that arrive while a fetch is under way wait for it instead of starting
    their own. When a refresh fails but the current credentials have not expired yet,
    they are served (with a logged warning) and the refresh is retried later.
    """

    __slots__ = ("_clock", "_current", "_fetch", "_lock", "_margin", "_refresh_at", "_source")

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Credentials]],
        *,
        source: str,
        clock: Callable[[], datetime] = _utcnow,
        margin: timedelta = REFRESH_MARGIN,
    ) -> None:
        self._fetch = fetch
        self._source = source
        self._clock = clock
        self._margin = margin
        # The credentials last fetched, None before the first fetch.
        self._current: Credentials | None = None
        # When the next get() must fetch; meaningless while _current is None.
        self._refresh_at = datetime.min.replace(tzinfo=UTC)
        # Held for the length of one fetch: the single-flight guard.
        self._lock = asyncio.Lock()

    async def get(self) -> Credentials:
        current = self._current
        if current is not None and self._clock() < self._refresh_at:
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
            if fresh.expiration is not None and fresh.expiration <= now:
                raise FetchError(self._source, f"credentials expired at {fresh.expiration}")
        except CredentialsError as exc:
            if current is None or _expired(current, now):
                raise
            logger.warning(
                "could not refresh credentials (%s); using the current ones until %s",
                exc,
                current.expiration,
            )
            self._refresh_at = now + RETRY_INTERVAL
            return current
        self._current = fresh
        self._refresh_at = _refresh_time(fresh.expiration, now, self._margin)
        return fresh

    def __repr__(self) -> str:
        expiration = None if self._current is None else self._current.expiration
        return f"RefreshingCredentials(source={self._source!r}, expiration={expiration!r})"


def _expired(credentials: Credentials, now: datetime) -> bool:
    return credentials.expiration is not None and credentials.expiration <= now


def _refresh_time(expiration: datetime | None, now: datetime, margin: timedelta) -> datetime:
    if expiration is None:
        return datetime.max.replace(tzinfo=UTC)
    # Credentials already inside the margin (the server has not rotated them yet) are
    # used for a while rather than fetched again on every call, but never past expiry.
    return max(expiration - margin, min(now + RETRY_INTERVAL, expiration))


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedCredentials:
    """What the chain found: a provider to sign with, the region, and where from."""

    provider: CredentialsProvider
    region: str | None
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Found:
    """A profile or variable that says where credentials are, before any network call."""

    kind: Literal["static", "ecs", "uri"]
    source: str
    region: str | None = None
    credentials: Credentials | None = None  # kind "static"
    role: str | None = None  # kind "ecs": the RAM role, None to ask the metadata service
    uri: str | None = None  # kind "uri"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Context:
    """The seams of one resolution."""

    profile: str | None
    env: Mapping[str, str]
    home: Path
    session: aiohttp.ClientSession | None
    metadata_url: str | None
    clock: Callable[[], datetime]


async def resolve_credentials(
    *,
    profile: str | None = None,
    env: Mapping[str, str] = os.environ,
    home: Path | None = None,
    session: aiohttp.ClientSession | None = None,
    metadata_url: str | None = METADATA_URL,
    clock: Callable[[], datetime] = _utcnow,
) -> ResolvedCredentials:
    """Find credentials the way Alibaba's tools do; raise `CredentialsError` if none.

    ``profile`` names a config.json profile or credentials.ini section and, when given
    and found in neither, is an error. ``metadata_url=None`` skips the ECS metadata
    service. ``session``, if given, must outlive the returned provider (refreshes use
    it); without one each fetch opens and closes its own.
    """
    ctx = _Context(
        profile=profile,
        env=env,
        home=Path.home() if home is None else home,
        session=session,
        metadata_url=metadata_url,
        clock=clock,
    )
    tried: list[str] = []
    found = (
        _from_environment(ctx, tried)
        or _check_oidc(ctx, tried)
        or _from_cli_config(ctx, tried)
        or _from_credentials_file(ctx, tried)
    )
    if found is None and profile:
        raise CredentialsError(f"profile {profile!r} not found; tried: {', '.join(tried)}")
    resolved = await _provide(found, ctx) if found else await _from_metadata(ctx, tried)
    if resolved is None:
        resolved = await _from_uri(ctx, tried)
    if resolved is None:
        raise CredentialsError(f"no credentials found; tried: {', '.join(tried)}; {_HOW_TO}")
    region = ctx.env.get("ALIBABA_CLOUD_REGION_ID") or resolved.region
    logger.debug("credentials from %s, region %s", resolved.source, region)
    return replace(resolved, region=region)


def _from_environment(ctx: _Context, tried: list[str]) -> _Found | None:
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
            source = "environment" if id_var.startswith("ALIBABA") else f"environment ({id_var})"
            creds = Credentials(
                access_key_id=key_id,
                access_key_secret=secret,
                security_token=ctx.env.get(token_var) or None,
                source=source,
            )
            return _Found(kind="static", source=source, credentials=creds)
        if key_id or secret:
            # Half a pair is a mistake; falling through to another identity would hide it.
            have, missing = (id_var, secret_var) if key_id else (secret_var, id_var)
            raise CredentialsError(f"{have} is set but {missing} is not; set both or neither")
    tried.append("environment (ALIBABA_CLOUD_ACCESS_KEY_ID not set)")
    return None


def _check_oidc(ctx: _Context, tried: list[str]) -> _Found | None:
    names = (
        "ALIBABA_CLOUD_ROLE_ARN",
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
    )
    unset = [name for name in names if not ctx.env.get(name)]
    if unset:
        tried.append(f"OIDC ({unset[0]} not set)")
        return None
    raise CredentialsError(
        "OIDC credentials (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN, "
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE) are not supported yet; instead set "
        "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (plus "
        "ALIBABA_CLOUD_SECURITY_TOKEN for STS), use an AK, StsToken or EcsRamRole profile "
        "in ~/.aliyun/config.json, or set ALIBABA_CLOUD_CREDENTIALS_URI"
    )


def _from_cli_config(ctx: _Context, tried: list[str]) -> _Found | None:
    path = ctx.home / ".aliyun" / "config.json"
    shown = _shown(path, ctx.home)
    if ctx.env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "").lower() == "true":
        tried.append(f"{shown} (disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED)")
        return None
    text = _read(path, shown)
    if text is None:
        tried.append(f"{shown} (no such file)")
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message names position only, never the text around it.
        raise CredentialsError(f"{shown}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    profiles = config.get("profiles") if isinstance(config, dict) else None
    if not isinstance(profiles, list):
        raise CredentialsError(f"{shown}: expected an object with a 'profiles' list")
    name = ctx.profile or ctx.env.get("ALIBABA_CLOUD_PROFILE") or config.get("current") or "default"
    profile = next((p for p in profiles if isinstance(p, dict) and p.get("name") == name), None)
    if profile is None:
        tried.append(f"{shown} (no profile {name!r})")
        return None
    where = f"{shown} profile {name!r}"
    mode = profile.get("mode")
    mode = mode if isinstance(mode, str) else ""
    region = _optional(profile, "region_id")
    match mode.lower():
        case "ak" | "ststoken":
            creds = Credentials(
                access_key_id=_required(profile, "access_key_id", where),
                access_key_secret=_required(profile, "access_key_secret", where),
                security_token=_required(profile, "sts_token", where)
                if mode.lower() == "ststoken"
                else None,
                source=where,
            )
            return _Found(kind="static", source=where, region=region, credentials=creds)
        case "ecsramrole":
            role = _optional(profile, "ram_role_name")
            return _Found(kind="ecs", source=where, region=region, role=role)
        case "credentialsuri":
            uri = _optional(profile, "credentials_uri") or ctx.env.get(
                "ALIBABA_CLOUD_CREDENTIALS_URI"
            )
            if not uri:
                raise CredentialsError(f"{where} (mode CredentialsURI) has no credentials_uri")
            return _Found(kind="uri", source=where, region=region, uri=uri)
        case "":
            raise CredentialsError(f"{where} has no mode; run `aliyun configure --profile {name}`")
        case _:
            raise CredentialsError(
                f"{where} uses mode {mode!r}, which fleetscan does not support yet; "
                f"use a profile with mode {_SUPPORTED_CLI_MODES}, or {_HOW_TO}"
            )


def _from_credentials_file(ctx: _Context, tried: list[str]) -> _Found | None:
    named = ctx.env.get("ALIBABA_CLOUD_CREDENTIALS_FILE")
    path = Path(named) if named else ctx.home / ".alibabacloud" / "credentials.ini"
    shown = _shown(path, ctx.home)
    text = _read(path, shown)
    if text is None:
        if named:
            raise CredentialsError(f"ALIBABA_CLOUD_CREDENTIALS_FILE names {shown}: no such file")
        tried.append(f"{shown} (no such file)")
        return None
    # No interpolation: a '%' in a secret is data, not a reference.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        # The exception's own message quotes the offending line, which may hold a secret.
        raise CredentialsError(f"{shown}: not a valid INI file ({_ini_problem(exc)})") from None
    name = ctx.profile or ctx.env.get("ALIBABA_CLOUD_PROFILE") or "default"
    if not parser.has_section(name):
        tried.append(f"{shown} (no section [{name}])")
        return None
    section = dict(parser.items(name))
    where = f"{shown} [{name}]"
    kind = section.get("type", "")
    region = _optional(section, "region_id")
    match kind:
        case "access_key" | "sts":
            creds = Credentials(
                access_key_id=_required(section, "access_key_id", where),
                access_key_secret=_required(section, "access_key_secret", where),
                security_token=_required(section, "security_token", where)
                if kind == "sts"
                else None,
                source=where,
            )
            return _Found(kind="static", source=where, region=region, credentials=creds)
        case "ecs_ram_role":
            role = _optional(section, "role_name")
            return _Found(kind="ecs", source=where, region=region, role=role)
        case "":
            raise CredentialsError(f"{where} has no type (use {_SUPPORTED_INI_TYPES})")
        case _:
            raise CredentialsError(
                f"{where} has type {kind!r}, which fleetscan does not support yet; "
                f"use {_SUPPORTED_INI_TYPES}, or {_HOW_TO}"
            )


async def _provide(found: _Found, ctx: _Context) -> ResolvedCredentials:
    """Turn what a profile says into a provider, fetching once if it is temporary."""
    if found.kind == "static":
        assert found.credentials is not None
        provider: CredentialsProvider = StaticCredentials(found.credentials)
        return ResolvedCredentials(provider=provider, region=found.region, source=found.source)
    try:
        if found.kind == "uri":
            assert found.uri is not None
            return await _uri_provider(ctx, found.uri, region=found.region)
        base = _metadata_base(ctx)
        if base is None:
            raise CredentialsError(
                f"{found.source} asks for an ECS RAM role, but the metadata service is disabled"
            )
        return await _metadata_provider(ctx, base, found.role, region=found.region)
    except FetchError as exc:
        # Name the profile that sent us there, not only the service that failed.
        raise CredentialsError(f"{found.source}: {exc}") from None


async def _from_metadata(ctx: _Context, tried: list[str]) -> ResolvedCredentials | None:
    base = _metadata_base(ctx)
    if base is None:
        if ctx.metadata_url is None:
            why = "disabled by the caller"
        else:
            why = "disabled by ALIBABA_CLOUD_ECS_METADATA_DISABLED"
        tried.append(f"ECS metadata ({why})")
        return None
    try:
        role = ctx.env.get("ALIBABA_CLOUD_ECS_METADATA") or None
        return await _metadata_provider(ctx, base, role, region=None)
    except FetchError as exc:
        # Off ECS, or no role attached: the usual case on a laptop, so go on.
        tried.append(f"{exc.place} ({exc.problem})")
        return None


async def _from_uri(ctx: _Context, tried: list[str]) -> ResolvedCredentials | None:
    uri = ctx.env.get("ALIBABA_CLOUD_CREDENTIALS_URI")
    if not uri:
        tried.append("ALIBABA_CLOUD_CREDENTIALS_URI (not set)")
        return None
    return await _uri_provider(ctx, uri, region=None)


def _metadata_base(ctx: _Context) -> str | None:
    if ctx.env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "").lower() == "true":
        return None
    return None if ctx.metadata_url is None else ctx.metadata_url.rstrip("/")


async def _metadata_provider(
    ctx: _Context, base: str, role: str | None, *, region: str | None
) -> ResolvedCredentials:
    require_token = ctx.env.get("ALIBABA_CLOUD_IMDSV1_DISABLED", "").lower() == "true"

    async def fetch() -> Credentials:
        return await fetch_metadata(ctx.session, base, role, require_token=require_token)

    source = metadata_place(base)
    provider = RefreshingCredentials(fetch, source=source, clock=ctx.clock)
    first = await provider.get()
    return ResolvedCredentials(provider=provider, region=region, source=first.source)


async def _uri_provider(ctx: _Context, uri: str, *, region: str | None) -> ResolvedCredentials:
    place = uri_place(uri)

    async def fetch() -> Credentials:
        return await fetch_uri(ctx.session, uri)

    provider = RefreshingCredentials(fetch, source=place, clock=ctx.clock)
    await provider.get()
    return ResolvedCredentials(provider=provider, region=region, source=place)


def _read(path: Path, shown: str) -> str | None:
    """The file's text, None if it does not exist; warns if others may read it."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise CredentialsError(f"{shown}: not UTF-8 text") from None
    except OSError as exc:
        raise CredentialsError(f"{shown}: cannot read ({exc.strerror})") from None
    if os.name == "posix" and mode & 0o044:
        logger.warning("%s is readable by other users; chmod 600 %s", shown, path)
    return text


def _required(values: Mapping[str, Any], key: str, where: str) -> str:
    value = values.get(key)
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"{where} has no {key}")
    return value


def _optional(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    return value if isinstance(value, str) and value else None


def _ini_problem(exc: configparser.Error) -> str:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno} comes before any [section]"
    if isinstance(exc, configparser.ParsingError):
        return f"line {exc.errors[0][0]} is neither [section] nor key = value"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"section [{exc.section}] appears twice"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"{exc.option} appears twice in [{exc.section}]"
    return type(exc).__name__


def _shown(path: Path, home: Path) -> str:
    """The path as people write it: ``~/.aliyun/config.json``."""
    try:
        return f"~/{path.relative_to(home)}"
    except ValueError:
        return str(path)
