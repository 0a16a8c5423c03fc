"""The credentials chain, against tmp homes, dict environments and loopback fakes.

No test reads the real environment or home, and none contacts 100.100.100.200: every
call passes ``env``, ``home`` and a loopback (or None) ``metadata_url``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fleetscan.credentials import (
    REFRESH_MARGIN,
    Credentials,
    RefreshingCredentials,
    ResolvedCredentials,
    StaticCredentials,
    resolve_credentials,
)
from fleetscan.errors import AccountError, CredentialsError

KEY_ID = "LTAI-test-id"
SECRET = "SECRET-must-never-show"
TOKEN = "TOKEN-must-never-show"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

ENV_AK = {"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def resolve(env: dict[str, str], home: Path, **kwargs: Any) -> ResolvedCredentials:
    kwargs.setdefault("metadata_url", None)
    return await resolve_credentials(env=env, home=home, **kwargs)


async def resolve_error(env: dict[str, str], home: Path, **kwargs: Any) -> str:
    with pytest.raises(CredentialsError) as info:
        await resolve(env, home, **kwargs)
    message = str(info.value)
    assert SECRET not in message
    assert TOKEN not in message
    return message


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def cli_config(home: Path, *profiles: dict[str, Any], current: str = "default") -> Path:
    body = {"current": current, "profiles": list(profiles)}
    return write(home / ".aliyun" / "config.json", json.dumps(body))


def ak_profile(name: str = "default", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "AK",
        "access_key_id": f"{KEY_ID}-{name}",
        "access_key_secret": SECRET,
        "region_id": f"region-of-{name}",
        **extra,
    }


def ini(home: Path, text: str) -> Path:
    return write(home / ".alibabacloud" / "credentials.ini", text)


# --- 1. environment ----------------------------------------------------------------------


async def test_environment_access_key(tmp_path: Path) -> None:
    resolved = await resolve(dict(ENV_AK), tmp_path)
    creds = await resolved.provider.get()
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == (
        KEY_ID,
        SECRET,
        None,
    )
    assert resolved.source == "environment"
    assert resolved.region is None
    assert isinstance(resolved.provider, StaticCredentials)


async def test_environment_sts_token_and_region(tmp_path: Path) -> None:
    env = {**ENV_AK, "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN, "ALIBABA_CLOUD_REGION_ID": "cn-x"}
    resolved = await resolve(env, tmp_path)
    assert (await resolved.provider.get()).security_token == TOKEN
    assert resolved.region == "cn-x"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID}, "ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"),
        ({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}, "ALIBABA_CLOUD_ACCESS_KEY_ID is not"),
        ({"ALICLOUD_SECRET_KEY": SECRET}, "ALICLOUD_ACCESS_KEY is not"),
    ],
)
async def test_half_an_environment_pair_is_an_error(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    cli_config(tmp_path, ak_profile())  # would match, but the half pair must not be skipped
    assert named in await resolve_error(env, tmp_path)


async def test_terraform_variables_are_a_fallback(tmp_path: Path) -> None:
    legacy = {
        "ALICLOUD_ACCESS_KEY": "legacy-id",
        "ALICLOUD_SECRET_KEY": SECRET,
        "ALICLOUD_SECURITY_TOKEN": TOKEN,
    }
    resolved = await resolve(legacy, tmp_path)
    creds = await resolved.provider.get()
    assert (creds.access_key_id, creds.security_token) == ("legacy-id", TOKEN)
    assert resolved.source == "environment (ALICLOUD_ACCESS_KEY)"

    both = await resolve({**legacy, **ENV_AK}, tmp_path)
    assert (await both.provider.get()).access_key_id == KEY_ID


async def test_environment_beats_every_file(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile())
    ini(tmp_path, "[default]\ntype = access_key\naccess_key_id = ini\naccess_key_secret = s\n")
    resolved = await resolve(dict(ENV_AK), tmp_path)
    assert resolved.source == "environment"


# --- 2. OIDC -----------------------------------------------------------------------------

OIDC = {
    "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/r",
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1:oidc-provider/p",
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "/var/run/token",
}


async def test_oidc_comes_before_profiles_and_needs_its_token_file(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile())  # later in the chain: must not be reached
    message = await resolve_error(dict(OIDC), tmp_path)
    assert message == (
        "environment (ALIBABA_CLOUD_ROLE_ARN, OIDC): cannot read the OIDC token file "
        "/var/run/token: No such file or directory"
    )


async def test_environment_keys_come_before_oidc(tmp_path: Path) -> None:
    resolved = await resolve({**OIDC, **ENV_AK}, tmp_path)
    assert resolved.source == "environment"


async def test_partial_oidc_is_skipped_and_reported(tmp_path: Path) -> None:
    env = {"ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/r"}
    message = await resolve_error(env, tmp_path)
    assert "OIDC (ALIBABA_CLOUD_OIDC_PROVIDER_ARN not set)" in message


# --- 3. aliyun CLI config.json -----------------------------------------------------------


async def test_cli_current_profile(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile("default"), ak_profile("work"), current="work")
    resolved = await resolve({}, tmp_path)
    creds = await resolved.provider.get()
    assert creds.access_key_id == f"{KEY_ID}-work"
    assert creds.access_key_secret == SECRET
    assert resolved.source == "~/.aliyun/config.json profile 'work'"
    assert creds.source == resolved.source
    assert resolved.region == "region-of-work"


async def test_cli_profile_selection_order(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile("default"), ak_profile("a"), ak_profile("b"), current="default")
    by_env = await resolve({"ALIBABA_CLOUD_PROFILE": "a"}, tmp_path)
    assert (await by_env.provider.get()).access_key_id == f"{KEY_ID}-a"
    by_arg = await resolve({"ALIBABA_CLOUD_PROFILE": "a"}, tmp_path, profile="b")
    assert (await by_arg.provider.get()).access_key_id == f"{KEY_ID}-b"


async def test_cli_mode_names_are_case_insensitive_like_the_cli(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile(mode="ak"))
    resolved = await resolve({}, tmp_path)
    assert (await resolved.provider.get()).access_key_secret == SECRET


async def test_cli_sts_token_profile(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile(mode="StsToken", sts_token=TOKEN))
    resolved = await resolve({}, tmp_path)
    assert (await resolved.provider.get()).security_token == TOKEN


async def test_region_variable_overrides_profile_region(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile())
    resolved = await resolve({"ALIBABA_CLOUD_REGION_ID": "cn-env"}, tmp_path)
    assert resolved.region == "cn-env"


async def test_cli_unsupported_mode_is_named(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile(mode="External", process_command="x"))
    message = await resolve_error({}, tmp_path)
    assert "~/.aliyun/config.json profile 'default'" in message
    assert "'External'" in message
    assert "not support" in message


@pytest.mark.parametrize(
    ("profile", "problem"),
    [
        (ak_profile(access_key_secret=""), "has no access_key_secret"),
        ({"name": "default", "mode": "AK", "access_key_secret": SECRET}, "has no access_key_id"),
        (ak_profile(mode="StsToken"), "has no sts_token"),
        (ak_profile(mode=""), "has no mode; run `aliyun configure --profile default`"),
    ],
)
async def test_cli_incomplete_profile(
    tmp_path: Path, profile: dict[str, Any], problem: str
) -> None:
    cli_config(tmp_path, profile)
    message = await resolve_error({}, tmp_path)
    assert message == f"~/.aliyun/config.json profile 'default' {problem}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"current": "default", "profiles": [{"access_key_secret": "' + SECRET, "not valid JSON"),
        ('{"current": "default"}', "expected an object with a 'profiles' list"),
        ("[]", "expected an object with a 'profiles' list"),
    ],
)
async def test_cli_malformed_file(tmp_path: Path, text: str, problem: str) -> None:
    write(tmp_path / ".aliyun" / "config.json", text)
    message = await resolve_error({}, tmp_path)
    assert message.startswith("~/.aliyun/config.json: ")
    assert problem in message


async def test_cli_profile_missing_falls_through_to_ini(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile("other"), current="other")
    ini(
        tmp_path,
        f"[work]\ntype = access_key\naccess_key_id = ini-id\naccess_key_secret = {SECRET}\n",
    )
    resolved = await resolve({"ALIBABA_CLOUD_PROFILE": "work"}, tmp_path)
    assert resolved.source == "~/.alibabacloud/credentials.ini [work]"


async def test_cli_config_beats_ini(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile())
    ini(tmp_path, "[default]\ntype = access_key\naccess_key_id = ini\naccess_key_secret = s\n")
    resolved = await resolve({}, tmp_path)
    assert resolved.source == "~/.aliyun/config.json profile 'default'"


async def test_cli_config_can_be_disabled(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile())
    env = {"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"}
    message = await resolve_error(env, tmp_path)
    assert "~/.aliyun/config.json (disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED)" in message


async def test_explicit_profile_found_nowhere_is_an_error(tmp_path: Path) -> None:
    cli_config(tmp_path, ak_profile())
    ini(tmp_path, "[default]\ntype = access_key\naccess_key_id = i\naccess_key_secret = s\n")
    message = await resolve_error({}, tmp_path, profile="nope")
    assert message.startswith("profile 'nope' not found; tried: ")
    assert "~/.aliyun/config.json (no profile 'nope')" in message
    assert "~/.alibabacloud/credentials.ini (no section [nope])" in message


# --- 4. credentials.ini ------------------------------------------------------------------


async def test_ini_default_section_with_percent_in_secret(tmp_path: Path) -> None:
    secret = SECRET + "%(x)s"  # interpolation would choke on this
    ini(
        tmp_path,
        "[default]\ntype = access_key  # comment\naccess_key_id = ini-id\n"
        f"access_key_secret = {secret}\nregion_id = cn-ini\n",
    )
    resolved = await resolve({}, tmp_path)
    creds = await resolved.provider.get()
    assert (creds.access_key_id, creds.access_key_secret) == ("ini-id", secret)
    assert resolved.source == "~/.alibabacloud/credentials.ini [default]"
    assert resolved.region == "cn-ini"


async def test_ini_sts_section_chosen_by_profile(tmp_path: Path) -> None:
    ini(
        tmp_path,
        "[default]\ntype = access_key\naccess_key_id = d\naccess_key_secret = s\n"
        f"[temp]\ntype = sts\naccess_key_id = STS.id\naccess_key_secret = {SECRET}\n"
        f"security_token = {TOKEN}\n",
    )
    resolved = await resolve({"ALIBABA_CLOUD_PROFILE": "temp"}, tmp_path)
    creds = await resolved.provider.get()
    assert (creds.access_key_id, creds.security_token) == ("STS.id", TOKEN)


async def test_ini_file_named_by_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path / "elsewhere.ini",
        f"[default]\ntype = access_key\naccess_key_id = there\naccess_key_secret = {SECRET}\n",
    )
    resolved = await resolve({"ALIBABA_CLOUD_CREDENTIALS_FILE": str(path)}, tmp_path / "home")
    assert (await resolved.provider.get()).access_key_id == "there"
    assert resolved.source == f"{path} [default]"


async def test_ini_file_named_by_environment_must_exist(tmp_path: Path) -> None:
    env = {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(tmp_path / "missing.ini")}
    message = await resolve_error(env, tmp_path / "home")
    assert message == f"ALIBABA_CLOUD_CREDENTIALS_FILE names {tmp_path}/missing.ini: no such file"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[default]\ntype = rsa_key_pair\n", "has type 'rsa_key_pair', which fleetscan does not"),
        (
            "[default]\naccess_key_id = x\n",
            "has no type (use access_key, sts, ram_role_arn, oidc_role_arn or ecs_ram_role)",
        ),
        ("[default]\ntype = access_key\naccess_key_id = x\n", "has no access_key_secret"),
        (
            f"[default]\ntype = sts\naccess_key_id = x\naccess_key_secret = {SECRET}\n",
            "has no security_token",
        ),
    ],
)
async def test_ini_bad_section(tmp_path: Path, text: str, problem: str) -> None:
    ini(tmp_path, text)
    message = await resolve_error({}, tmp_path)
    assert message.startswith("~/.alibabacloud/credentials.ini [default] ")
    assert problem in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"access_key_secret = {SECRET}\n", "line 1 comes before any [section]"),
        (
            f"[default]\ntype = access_key\n{SECRET}\n",
            "line 3 is neither [section] nor key = value",
        ),
        ("[default]\n[default]\n", "section [default] appears twice"),
        (
            f"[default]\naccess_key_secret = {SECRET}\naccess_key_secret = x\n",
            "access_key_secret appears twice in [default]",
        ),
    ],
)
async def test_ini_unparseable_never_quotes_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    ini(tmp_path, text)
    message = await resolve_error({}, tmp_path)
    assert message == f"~/.alibabacloud/credentials.ini: not a valid INI file ({problem})"


# --- permissions -------------------------------------------------------------------------


async def test_shared_credentials_files_earn_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write(tmp_path / ".aliyun" / "config.json", json.dumps({"profiles": []}), 0o644)
    ini(
        tmp_path, f"[default]\ntype = access_key\naccess_key_id = i\naccess_key_secret = {SECRET}\n"
    )
    (tmp_path / ".alibabacloud" / "credentials.ini").chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="fleetscan"):
        await resolve({}, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.name == "fleetscan"]
    assert warnings == [
        f"~/.aliyun/config.json is readable by other users; chmod 600 {config}",
        "~/.alibabacloud/credentials.ini is readable by other users; "
        f"chmod 600 {tmp_path}/.alibabacloud/credentials.ini",
    ]
    assert SECRET not in caplog.text


async def test_private_credentials_files_earn_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cli_config(tmp_path, ak_profile())
    with caplog.at_level(logging.DEBUG, logger="fleetscan"):
        await resolve({}, tmp_path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert SECRET not in caplog.text


# --- nothing found -----------------------------------------------------------------------


async def test_nothing_found_names_every_place_in_order(tmp_path: Path) -> None:
    message = await resolve_error({}, tmp_path)
    assert message == (
        "no credentials found; tried: environment (ALIBABA_CLOUD_ACCESS_KEY_ID not set), "
        "OIDC (ALIBABA_CLOUD_ROLE_ARN not set), ~/.aliyun/config.json (no such file), "
        "~/.alibabacloud/credentials.ini (no such file), ECS metadata (disabled by the caller), "
        "ALIBABA_CLOUD_CREDENTIALS_URI (not set); set ALIBABA_CLOUD_ACCESS_KEY_ID and "
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET, or run `aliyun configure`"
    )


async def test_metadata_disabled_by_environment(tmp_path: Path, imds: FakeServer) -> None:
    env = {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "TRUE"}
    message = await resolve_error(env, tmp_path, metadata_url=imds.url)
    assert "ECS metadata (disabled by ALIBABA_CLOUD_ECS_METADATA_DISABLED)" in message
    assert imds.log == []


async def test_metadata_disabled_by_caller(tmp_path: Path, imds: FakeServer) -> None:
    await resolve_error({}, tmp_path, metadata_url=None)
    assert imds.log == []


async def test_unreachable_metadata_is_skipped_and_reported(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    message = await resolve_error({}, tmp_path, metadata_url=url)
    assert f"ECS metadata at {url} (unreachable: " in message
    assert message.index("ECS metadata") < message.index("ALIBABA_CLOUD_CREDENTIALS_URI")


# --- reprs -------------------------------------------------------------------------------


async def test_reprs_hide_secret_and_token() -> None:
    creds = Credentials(
        access_key_id=KEY_ID, access_key_secret=SECRET, security_token=TOKEN, source="test"
    )
    for text in (repr(creds), str(creds), repr(StaticCredentials(creds))):
        assert KEY_ID in text
        assert SECRET not in text
        assert TOKEN not in text

    async def fetch() -> Credentials:
        return creds

    refreshing = RefreshingCredentials(fetch, source="test")
    await refreshing.get()
    resolved = ResolvedCredentials(provider=refreshing, region=None, source="test")
    for text in (repr(refreshing), repr(resolved)):
        assert SECRET not in text
        assert TOKEN not in text


# --- loopback fakes: ECS metadata and a credentials URI ----------------------------------


@dataclass
class FakeServer:
    """An ECS metadata service and a credentials URI on one loopback port."""

    url: str = ""
    role: str = "fleet-role"
    lifetime: timedelta = timedelta(hours=6)
    clock: Clock = field(default_factory=Clock)
    token_status: int = 200
    code: str = "Success"
    # (method, path, session token header) for every request, in order.
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    # Credential answers given so far; numbers the keys.
    fetches: int = 0
    # When set, credential answers wait for it; `arrived` is set once one is waiting.
    gate: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self) -> dict[str, str]:
        self.fetches += 1
        return {
            "Code": self.code,
            "AccessKeyId": f"STS.key{self.fetches}",
            "AccessKeySecret": f"{SECRET}{self.fetches}",
            "SecurityToken": f"{TOKEN}{self.fetches}",
            "Expiration": (self.clock.now + self.lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def imds() -> AsyncIterator[FakeServer]:
    state = FakeServer()

    def record(request: web.Request) -> None:
        token = request.headers.get("X-aliyun-ecs-metadata-token")
        state.log.append((request.method, request.path, token))

    async def token(request: web.Request) -> web.Response:
        record(request)
        if request.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds") is None:
            return web.Response(status=400)
        return web.Response(status=state.token_status, text="md-token")

    async def roles(request: web.Request) -> web.Response:
        record(request)
        return web.Response(text=f"{state.role}\n") if state.role else web.Response(status=404)

    async def credentials(request: web.Request) -> web.Response:
        record(request)
        if request.match_info["role"] != state.role:
            return web.Response(status=404)
        return await answer()

    async def uri(request: web.Request) -> web.Response:
        record(request)
        return await answer()

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text=SECRET)

    async def answer() -> web.Response:
        if state.gate is not None:
            state.arrived.set()
            await state.gate.wait()
        return web.json_response(state.answer())

    app = web.Application()
    app.router.add_put("/latest/api/token", token)
    app.router.add_get("/latest/meta-data/ram/security-credentials/", roles)
    app.router.add_get("/latest/meta-data/ram/security-credentials/{role}", credentials)
    app.router.add_get("/creds", uri)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


async def test_metadata_flow_token_first_then_role_then_keys(
    tmp_path: Path, imds: FakeServer
) -> None:
    resolved = await resolve({}, tmp_path, metadata_url=imds.url + "/", clock=imds.clock)
    creds = await resolved.provider.get()
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == (
        "STS.key1",
        f"{SECRET}1",
        f"{TOKEN}1",
    )
    assert creds.expiration == T0 + imds.lifetime
    assert resolved.source == f"ECS metadata at {imds.url} role 'fleet-role'"
    assert imds.log == [
        ("PUT", "/latest/api/token", None),
        ("GET", "/latest/meta-data/ram/security-credentials/", "md-token"),
        ("GET", "/latest/meta-data/ram/security-credentials/fleet-role", "md-token"),
    ]


async def test_metadata_role_from_environment_skips_discovery(
    tmp_path: Path, imds: FakeServer
) -> None:
    env = {"ALIBABA_CLOUD_ECS_METADATA": "fleet-role"}
    await resolve(env, tmp_path, metadata_url=imds.url, clock=imds.clock)
    assert [path for _, path, _ in imds.log] == [
        "/latest/api/token",
        "/latest/meta-data/ram/security-credentials/fleet-role",
    ]


async def test_metadata_without_token_support_falls_back_to_v1(
    tmp_path: Path, imds: FakeServer
) -> None:
    imds.token_status = 404
    resolved = await resolve({}, tmp_path, metadata_url=imds.url, clock=imds.clock)
    assert (await resolved.provider.get()).access_key_id == "STS.key1"
    assert [token for _, _, token in imds.log] == [None, None, None]


async def test_metadata_v1_fallback_can_be_forbidden(tmp_path: Path, imds: FakeServer) -> None:
    imds.token_status = 403
    env = {"ALIBABA_CLOUD_IMDSV1_DISABLED": "true"}
    message = await resolve_error(env, tmp_path, metadata_url=imds.url, clock=imds.clock)
    assert f"ECS metadata at {imds.url} (HTTP 403 for a session token" in message
    assert len(imds.log) == 1


async def test_metadata_without_role_is_skipped(tmp_path: Path, imds: FakeServer) -> None:
    imds.role = ""
    message = await resolve_error({}, tmp_path, metadata_url=imds.url)
    assert (
        f"ECS metadata at {imds.url} (no RAM role attached to this instance (HTTP 404))" in message
    )


async def test_metadata_refreshes_before_expiry(tmp_path: Path, imds: FakeServer) -> None:
    resolved = await resolve({}, tmp_path, metadata_url=imds.url, clock=imds.clock)
    expiry = T0 + imds.lifetime
    imds.clock.now = expiry - REFRESH_MARGIN - timedelta(seconds=1)
    assert (await resolved.provider.get()).access_key_id == "STS.key1"
    assert imds.fetches == 1
    imds.clock.now = expiry - REFRESH_MARGIN
    fresh = await resolved.provider.get()
    assert fresh.access_key_id == "STS.key2"
    assert fresh.expiration == imds.clock.now + imds.lifetime
    assert imds.fetches == 2
    assert len(imds.log) == 6  # the refresh asked for a new token and the role again


async def test_metadata_refresh_is_single_flight(tmp_path: Path, imds: FakeServer) -> None:
    resolved = await resolve({}, tmp_path, metadata_url=imds.url, clock=imds.clock)
    imds.clock.now = T0 + imds.lifetime  # stale for everyone
    imds.gate = asyncio.Event()
    tasks = [asyncio.create_task(resolved.provider.get()) for _ in range(50)]
    await imds.arrived.wait()  # one fetch is in flight; every task has reached get()
    imds.gate.set()
    results = await asyncio.gather(*tasks)
    assert {creds.access_key_id for creds in results} == {"STS.key2"}
    assert imds.fetches == 2


async def test_metadata_role_from_cli_profile(tmp_path: Path, imds: FakeServer) -> None:
    cli_config(tmp_path, {"name": "default", "mode": "EcsRamRole", "ram_role_name": "fleet-role"})
    resolved = await resolve({}, tmp_path, metadata_url=imds.url, clock=imds.clock)
    assert (await resolved.provider.get()).access_key_id == "STS.key1"
    assert isinstance(resolved.provider, RefreshingCredentials)
    assert "/latest/meta-data/ram/security-credentials/" not in [p for _, p, _ in imds.log]


async def test_metadata_role_from_ini(tmp_path: Path, imds: FakeServer) -> None:
    ini(tmp_path, "[default]\ntype = ecs_ram_role\nrole_name = fleet-role\n")
    resolved = await resolve({}, tmp_path, metadata_url=imds.url, clock=imds.clock)
    assert (await resolved.provider.get()).access_key_id == "STS.key1"


async def test_ecs_profile_with_metadata_disabled_is_an_error(tmp_path: Path) -> None:
    cli_config(tmp_path, {"name": "default", "mode": "EcsRamRole", "ram_role_name": "r"})
    message = await resolve_error({}, tmp_path, metadata_url=None)
    assert "profile 'default' asks for an ECS RAM role, but the metadata service is disabled" in (
        message
    )


async def test_ecs_profile_with_unknown_role_is_an_error(tmp_path: Path, imds: FakeServer) -> None:
    cli_config(tmp_path, {"name": "default", "mode": "EcsRamRole", "ram_role_name": "other"})
    message = await resolve_error({}, tmp_path, metadata_url=imds.url)
    profile = "~/.aliyun/config.json profile 'default'"
    assert message == f"{profile}: ECS metadata at {imds.url} role 'other': HTTP 404"


async def test_given_session_is_used_and_left_open(tmp_path: Path, imds: FakeServer) -> None:
    async with aiohttp.ClientSession() as session:
        resolved = await resolve(
            {}, tmp_path, metadata_url=imds.url, clock=imds.clock, session=session
        )
        assert (await resolved.provider.get()).access_key_id == "STS.key1"
        assert not session.closed


# --- 6. credentials URI ------------------------------------------------------------------


async def test_credentials_uri(tmp_path: Path, imds: FakeServer) -> None:
    env = {"ALIBABA_CLOUD_CREDENTIALS_URI": f"{imds.url}/creds?auth=query-secret"}
    resolved = await resolve(env, tmp_path, clock=imds.clock)
    creds = await resolved.provider.get()
    assert (creds.access_key_secret, creds.security_token) == (f"{SECRET}1", f"{TOKEN}1")
    assert resolved.source == f"credentials URI {imds.url}/creds"
    assert "query-secret" not in repr(resolved)
    assert creds.expiration is not None
    imds.clock.now = creds.expiration - REFRESH_MARGIN
    assert (await resolved.provider.get()).access_key_id == "STS.key2"


async def test_metadata_comes_before_credentials_uri(tmp_path: Path, imds: FakeServer) -> None:
    env = {"ALIBABA_CLOUD_CREDENTIALS_URI": f"{imds.url}/creds"}
    resolved = await resolve(env, tmp_path, metadata_url=imds.url, clock=imds.clock)
    assert resolved.source.startswith("ECS metadata")


async def test_credentials_uri_from_cli_profile(tmp_path: Path, imds: FakeServer) -> None:
    profile = {"name": "default", "mode": "CredentialsURI", "credentials_uri": f"{imds.url}/creds"}
    cli_config(tmp_path, {**profile, "region_id": "cn-uri"})
    resolved = await resolve({}, tmp_path, clock=imds.clock)
    assert (await resolved.provider.get()).access_key_id == "STS.key1"
    assert resolved.region == "cn-uri"


@pytest.mark.parametrize(
    ("path", "code", "problem"),
    [
        ("/broken?auth=query-secret", "Success", "HTTP 503"),
        ("/creds?auth=query-secret", "Failed", "answered Code 'Failed', not 'Success'"),
        ("/nowhere", "Success", "HTTP 404"),
    ],
)
async def test_credentials_uri_errors(
    tmp_path: Path, imds: FakeServer, path: str, code: str, problem: str
) -> None:
    imds.code = code
    env = {"ALIBABA_CLOUD_CREDENTIALS_URI": imds.url + path}
    message = await resolve_error(env, tmp_path)
    assert message == f"credentials URI {imds.url}{path.split('?')[0]}: {problem}"
    assert "query-secret" not in message


async def test_credentials_uri_must_be_http(tmp_path: Path) -> None:
    env = {"ALIBABA_CLOUD_CREDENTIALS_URI": "file:///etc/creds"}
    assert "not an http or https URL" in await resolve_error(env, tmp_path)


async def test_unreachable_credentials_uri(tmp_path: Path) -> None:
    env = {"ALIBABA_CLOUD_CREDENTIALS_URI": f"http://127.0.0.1:{closed_port()}/c"}
    assert ": unreachable: " in await resolve_error(env, tmp_path)


# --- RefreshingCredentials on its own ----------------------------------------------------


def temporary(n: int, expiration: datetime) -> Credentials:
    return Credentials(
        access_key_id=f"STS.{n}",
        access_key_secret=SECRET,
        security_token=TOKEN,
        expiration=expiration,
        source="fake",
    )


async def test_single_flight_many_waiters() -> None:
    clock = Clock()
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> Credentials:
        nonlocal calls
        calls += 1
        await gate.wait()
        return temporary(calls, clock.now + timedelta(hours=1))

    provider = RefreshingCredentials(fetch, source="fake", clock=clock)
    tasks = [asyncio.create_task(provider.get()) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert {creds.access_key_id for creds in results} == {"STS.1"}


async def test_failed_refresh_serves_current_until_expiry(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    answers: list[Credentials | CredentialsError] = [
        temporary(1, T0 + timedelta(hours=1)),
        CredentialsError("fake: HTTP 500"),
        CredentialsError("fake: HTTP 500"),
    ]

    async def fetch() -> Credentials:
        answer = answers.pop(0)
        if isinstance(answer, CredentialsError):
            raise answer
        return answer

    provider = RefreshingCredentials(fetch, source="fake", clock=clock)
    await provider.get()
    clock.now = T0 + timedelta(hours=1) - REFRESH_MARGIN
    with caplog.at_level(logging.WARNING, logger="fleetscan"):
        assert (await provider.get()).access_key_id == "STS.1"
    assert "could not refresh credentials (fake: HTTP 500)" in caplog.text
    assert SECRET not in caplog.text
    assert len(answers) == 1
    assert (await provider.get()).access_key_id == "STS.1"  # retried later, not on each call
    assert len(answers) == 1
    clock.now = T0 + timedelta(hours=1)
    # Account-wide once expired: a scan stops (exit 3) instead of failing every call.
    with pytest.raises(AccountError, match=r"CredentialsExpired .*fake: HTTP 500"):
        await provider.get()


async def test_credentials_inside_the_margin_are_not_fetched_on_every_call() -> None:
    clock = Clock()
    calls = 0

    async def fetch() -> Credentials:
        nonlocal calls
        calls += 1
        return temporary(calls, T0 + timedelta(minutes=3))  # the server has not rotated yet

    provider = RefreshingCredentials(fetch, source="fake", clock=clock)
    for _ in range(10):
        await provider.get()
    assert calls == 1
    clock.now = T0 + timedelta(minutes=1)
    await provider.get()
    assert calls == 2


async def test_expired_answer_is_an_error() -> None:
    async def fetch() -> Credentials:
        return temporary(1, T0 - timedelta(seconds=1))

    provider = RefreshingCredentials(fetch, source="fake", clock=Clock())
    with pytest.raises(CredentialsError, match="fake: credentials expired at"):
        await provider.get()
