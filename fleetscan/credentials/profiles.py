"""The two profile files: the aliyun CLI's ``~/.aliyun/config.json`` and
``~/.alibabacloud/credentials.ini`` (``onsmqtt-api.md`` §7 and §7.1).

`find_cli_profile` and `find_ini_section` read one file each and answer with the
`Source` the chosen profile describes, or a short reason why there is none (for the
"tried" list). A profile that is there but wrong is a `CredentialsError` that names
the file and profile and never quotes a value. No network call happens here.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetscan.credentials.sources import (
    AccessKey,
    Context,
    CredentialsUri,
    EcsRamRole,
    OidcRoleArn,
    RamRoleArn,
    Source,
)
from fleetscan.credentials.sts import DEFAULT_DURATION_SECONDS
from fleetscan.credentials.value import Credentials
from fleetscan.errors import CredentialsError

__all__ = [
    "HOW_TO",
    "SUPPORTED_CLI_MODES",
    "SUPPORTED_INI_TYPES",
    "find_cli_profile",
    "find_ini_section",
    "shown",
]

logger = logging.getLogger("fleetscan")

SUPPORTED_CLI_MODES = (
    "AK, StsToken, RamRoleArn, ChainableRamRoleArn, EcsRamRole, OIDC or CredentialsURI"
)
SUPPORTED_INI_TYPES = "access_key, sts, ram_role_arn, oidc_role_arn or ecs_ram_role"
HOW_TO = (
    "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or run `aliyun configure`"
)


# --- ~/.aliyun/config.json ------------------------------------------------------------


def find_cli_profile(ctx: Context) -> Source | str:
    """The source of the chosen config.json profile, or why there is none."""
    path = ctx.home / ".aliyun" / "config.json"
    where_file = shown(path, ctx.home)
    if ctx.env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "").lower() == "true":
        return f"{where_file} (disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED)"
    text = _read(path, where_file)
    if text is None:
        return f"{where_file} (no such file)"
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message names position only, never the text around it.
        raise CredentialsError(
            f"{where_file}: not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None
    profiles = config.get("profiles") if isinstance(config, dict) else None
    if not isinstance(profiles, list):
        raise CredentialsError(f"{where_file}: expected an object with a 'profiles' list")
    by_name = {p.get("name"): p for p in profiles if isinstance(p, dict)}
    name = ctx.profile or ctx.env.get("ALIBABA_CLOUD_PROFILE") or config.get("current") or "default"
    if name not in by_name:
        return f"{where_file} (no profile {name!r})"
    return _cli_source(by_name, name, where_file, ctx, chain=())


def _cli_source(
    by_name: Mapping[Any, dict[str, Any]],
    name: str,
    where_file: str,
    ctx: Context,
    *,
    chain: tuple[str, ...],
) -> Source:
    profile = by_name[name]
    where = f"{where_file} profile {name!r}"
    raw_mode = profile.get("mode")
    mode = raw_mode if isinstance(raw_mode, str) else ""
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
            return AccessKey(where=where, region=region, credentials=creds)
        case "ramrolearn":
            keys = Credentials(
                access_key_id=_required(profile, "access_key_id", where),
                access_key_secret=_required(profile, "access_key_secret", where),
                security_token=_optional(profile, "sts_token"),
                source=where,
            )
            return _cli_role(profile, where, region, AccessKey(where=where, credentials=keys))
        case "chainableramrolearn":
            source_name = _required(profile, "source_profile", where)
            if source_name in (*chain, name):
                path = " -> ".join(repr(n) for n in (*chain, name, source_name))
                raise CredentialsError(f"{where}: source_profile makes a cycle ({path})")
            if source_name not in by_name:
                raise CredentialsError(
                    f"{where}: source_profile {source_name!r} is not a profile of {where_file}"
                )
            source = _cli_source(by_name, source_name, where_file, ctx, chain=(*chain, name))
            return _cli_role(profile, where, region, source)
        case "oidc":
            return OidcRoleArn(
                where=where,
                region=region,
                role_arn=_required(profile, "ram_role_arn", where),
                provider_arn=_required(profile, "oidc_provider_arn", where),
                token_file=Path(_required(profile, "oidc_token_file", where)),
                session_name=_optional(profile, "ram_session_name"),
                duration_seconds=_seconds(profile, "expired_seconds", where),
            )
        case "ecsramrole":
            return EcsRamRole(where=where, region=region, role=_optional(profile, "ram_role_name"))
        case "credentialsuri":
            uri = _optional(profile, "credentials_uri") or ctx.env.get(
                "ALIBABA_CLOUD_CREDENTIALS_URI"
            )
            if not uri:
                raise CredentialsError(f"{where} (mode CredentialsURI) has no credentials_uri")
            return CredentialsUri(where=where, region=region, uri=uri)
        case "":
            raise CredentialsError(f"{where} has no mode; run `aliyun configure --profile {name}`")
        case _:
            raise CredentialsError(
                f"{where} uses mode {mode!r}, which fleetscan does not support yet; "
                f"use a profile with mode {SUPPORTED_CLI_MODES}, or {HOW_TO}"
            )


def _cli_role(profile: Mapping[str, Any], where: str, region: str | None, source: Source) -> Source:
    return RamRoleArn(
        where=where,
        region=region,
        source=source,
        role_arn=_required(profile, "ram_role_arn", where),
        session_name=_optional(profile, "ram_session_name"),
        duration_seconds=_seconds(profile, "expired_seconds", where),
        external_id=_optional(profile, "external_id"),
        policy=_optional(profile, "policy"),
    )


# --- ~/.alibabacloud/credentials.ini --------------------------------------------------


def find_ini_section(ctx: Context) -> Source | str:
    """The source of the chosen credentials.ini section, or why there is none."""
    named = ctx.env.get("ALIBABA_CLOUD_CREDENTIALS_FILE")
    path = Path(named) if named else ctx.home / ".alibabacloud" / "credentials.ini"
    where_file = shown(path, ctx.home)
    text = _read(path, where_file)
    if text is None:
        if named:
            raise CredentialsError(
                f"ALIBABA_CLOUD_CREDENTIALS_FILE names {where_file}: no such file"
            )
        return f"{where_file} (no such file)"
    # No interpolation: a '%' in a secret is data, not a reference.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        # The exception's own message quotes the offending line, which may hold a secret.
        raise CredentialsError(
            f"{where_file}: not a valid INI file ({_ini_problem(exc)})"
        ) from None
    name = ctx.profile or ctx.env.get("ALIBABA_CLOUD_PROFILE") or "default"
    if not parser.has_section(name):
        return f"{where_file} (no section [{name}])"
    section = dict(parser.items(name))
    where = f"{where_file} [{name}]"
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
            return AccessKey(where=where, region=region, credentials=creds)
        case "ram_role_arn":
            keys = Credentials(
                access_key_id=_required(section, "access_key_id", where),
                access_key_secret=_required(section, "access_key_secret", where),
                security_token=_optional(section, "security_token"),
                source=where,
            )
            return RamRoleArn(
                where=where,
                region=region,
                source=AccessKey(where=where, credentials=keys),
                role_arn=_required(section, "role_arn", where),
                session_name=_optional(section, "role_session_name"),
                duration_seconds=_seconds(section, "duration_seconds", where),
                policy=_optional(section, "policy"),
                external_id=_optional(section, "external_id"),
            )
        case "oidc_role_arn":
            return OidcRoleArn(
                where=where,
                region=region,
                role_arn=_required(section, "role_arn", where),
                provider_arn=_required(section, "oidc_provider_arn", where),
                token_file=Path(_required(section, "oidc_token_file_path", where)),
                session_name=_optional(section, "role_session_name"),
                duration_seconds=_seconds(section, "duration_seconds", where),
                policy=_optional(section, "policy"),
            )
        case "ecs_ram_role":
            return EcsRamRole(where=where, region=region, role=_optional(section, "role_name"))
        case "":
            raise CredentialsError(f"{where} has no type (use {SUPPORTED_INI_TYPES})")
        case _:
            raise CredentialsError(
                f"{where} has type {kind!r}, which fleetscan does not support yet; "
                f"use {SUPPORTED_INI_TYPES}, or {HOW_TO}"
            )


# --- small readers ----------------------------------------------------------------------


def _read(path: Path, where: str) -> str | None:
    """The file's text, None if it does not exist; warns if others may read it."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise CredentialsError(f"{where}: cannot read ({exc.strerror})") from None
    if os.name == "posix" and mode & 0o044:
        logger.warning("%s is readable by other users; chmod 600 %s", where, path)
    return text


def _required(values: Mapping[str, Any], key: str, where: str) -> str:
    value = values.get(key)
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"{where} has no {key}")
    return value


def _optional(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    return value if isinstance(value, str) and value else None


def _seconds(values: Mapping[str, Any], key: str, where: str) -> int:
    """A duration in whole seconds (JSON number or text); STS checks its range.

    Unset, empty or 0 (what ``aliyun configure`` writes when none is given) is STS's
    default.
    """
    value = values.get(key)
    if value is None or value == "" or value == 0:
        return DEFAULT_DURATION_SECONDS
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    raise CredentialsError(f"{where}: {key} is not a whole number of seconds")


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


def shown(path: Path, home: Path) -> str:
    """The path as people write it: ``~/.aliyun/config.json``."""
    try:
        return f"~/{path.relative_to(home)}"
    except ValueError:
        return str(path)
