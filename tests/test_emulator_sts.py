"""The emulator's STS, request by request: what it accepts, and each refusal's code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_fixtures import FORM, Caller, FakeClock, Reply

from fleetscan.emulator import (
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    FaultRule,
    KeyPair,
    RunningEmulator,
    StsConfig,
    StsRole,
    run_emulator,
)
from fleetscan.emulator.config import STS_VERSION

UID = "1234567890123456"
ROLE = f"acs:ram::{UID}:role/audit"
OIDC_ROLE = f"acs:ram::{UID}:role/rrsa"
PROVIDER = f"acs:ram::{UID}:oidc-provider/ack"
TOKEN = "oidc-token-for-tests"
TRUSTED_ID, TRUSTED_SECRET = "LTAI.trusted", "trusted-secret"
OTHER_ID, OTHER_SECRET = "LTAI.other", "other-secret"


@pytest.fixture
async def sts() -> AsyncIterator[tuple[RunningEmulator, Caller, FakeClock]]:
    clock = FakeClock()
    config = EmulatorConfig(
        keys=(
            KeyPair(access_key_id=TRUSTED_ID, secret=TRUSTED_SECRET),
            KeyPair(access_key_id=OTHER_ID, secret=OTHER_SECRET),
        ),
        sts=StsConfig(
            roles=(
                StsRole(arn=ROLE, trusted=(TRUSTED_ID,), external_id="ext"),
                StsRole(arn=OIDC_ROLE, oidc_provider_arn=PROVIDER, oidc_tokens=(TOKEN,)),
            )
        ),
    )
    async with run_emulator(config, clock=clock) as emu, aiohttp.ClientSession() as session:
        assert emu.sts_url is not None
        caller = Caller(
            session, emu.sts_url, clock=clock, access_key_id=TRUSTED_ID, secret=TRUSTED_SECRET
        )
        yield emu, caller, clock


def assume(**more: str) -> dict[str, str]:
    return {"RoleArn": ROLE, "RoleSessionName": "s1", "ExternalId": "ext", **more}


def oidc(**more: str) -> dict[str, str]:
    return {
        "RoleArn": OIDC_ROLE,
        "OIDCProviderArn": PROVIDER,
        "OIDCToken": TOKEN,
        "RoleSessionName": "s1",
        **more,
    }


async def anonymous(caller: Caller, params: dict[str, str], method: str = "POST") -> Reply:
    full = {"Action": "AssumeRoleWithOIDC", "Version": STS_VERSION, **params}
    if method == "GET":
        query = "&".join(f"{k}={v}" for k, v in full.items())
        return await caller.send("GET", f"{caller.url}?{query}", {}, None)
    body = "&".join(f"{k}={v}" for k, v in full.items()).encode()
    return await caller.send("POST", caller.url, {"Content-Type": FORM}, body)


async def test_assume_role_issues_keys_the_api_accepts_until_they_expire(
    sts: tuple[RunningEmulator, Caller, FakeClock],
) -> None:
    emu, caller, clock = sts
    reply = await caller.call(
        "AssumeRole", assume(DurationSeconds="900"), scheme="v1", in_body=True, version=STS_VERSION
    )
    assert reply.status == 200, reply.body
    issued = reply.body["Credentials"]
    assert issued["AccessKeyId"].startswith("STS.")
    assert reply.body["AssumedRoleUser"]["Arn"] == f"acs:ram::{UID}:assumed-role/audit/s1"
    api = Caller(
        caller.session,
        emu.url,
        clock=clock,
        access_key_id=issued["AccessKeyId"],
        secret=issued["AccessKeySecret"],
        security_token=issued["SecurityToken"],
        instance_id=DEFAULT_INSTANCE_ID,
    )
    assert (await api.single("GID_test@@@dev1")).status == 200
    clock.advance(899)
    assert (await api.single("GID_test@@@dev1")).status == 200
    clock.advance(1)
    assert (await api.single("GID_test@@@dev1")).code == "InvalidSecurityToken.Expired"


async def test_oidc_is_anonymous_and_answers_token_info(
    sts: tuple[RunningEmulator, Caller, FakeClock],
) -> None:
    emu, caller, _ = sts
    for method in ("POST", "GET"):
        reply = await anonymous(caller, oidc(), method)
        assert reply.status == 200, reply.body
        assert "OIDCTokenInfo" in reply.body
    assert emu.sts.stats.issued("AssumeRoleWithOIDC") == 2


@pytest.mark.parametrize(
    ("params", "signer", "code", "status"),
    [
        (assume(), OTHER_ID, "NoPermission", 403),
        (assume(ExternalId="wrong"), TRUSTED_ID, "NoPermission", 403),
        (assume(RoleArn=f"acs:ram::{UID}:role/none"), TRUSTED_ID, "EntityNotExist.Role", 404),
        (assume(RoleSessionName="x"), TRUSTED_ID, "InvalidParameter.RoleSessionName", 400),
        (assume(DurationSeconds="899"), TRUSTED_ID, "InvalidParameter.DurationSeconds", 400),
        (assume(DurationSeconds="3601"), TRUSTED_ID, "InvalidParameter.DurationSeconds", 400),
        (assume(Policy="[1]"), TRUSTED_ID, "InvalidParameter.PolicyGrammar", 400),
        ({"RoleSessionName": "s1"}, TRUSTED_ID, "MissingRoleArn", 400),
        (assume(), "LTAI.nobody", "InvalidAccessKeyId.NotFound", 404),
    ],
)
async def test_assume_role_refusals(
    sts: tuple[RunningEmulator, Caller, FakeClock],
    params: dict[str, str],
    signer: str,
    code: str,
    status: int,
) -> None:
    emu, caller, _ = sts
    secret = {TRUSTED_ID: TRUSTED_SECRET, OTHER_ID: OTHER_SECRET}.get(signer, "x")
    reply = await caller.call(
        "AssumeRole",
        params,
        scheme="v1",
        in_body=True,
        version=STS_VERSION,
        access_key_id=signer,
        secret=secret,
    )
    assert (reply.code, reply.status) == (code, status)
    assert emu.sts.issued == []


async def test_a_bad_signature_is_refused_with_the_string_to_sign(
    sts: tuple[RunningEmulator, Caller, FakeClock],
) -> None:
    _, caller, _ = sts
    reply = await caller.call(
        "AssumeRole", assume(), scheme="v1", in_body=True, version=STS_VERSION, secret="wrong"
    )
    assert reply.code == "SignatureDoesNotMatch"
    assert "server string to sign is:POST&%2F&" in reply.body["Message"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (oidc(OIDCToken="nope-not-it"), "AuthenticationFail.OIDCToken"),
        (oidc(OIDCToken="abc"), "InvalidParameter.OIDCToken"),
        (oidc(OIDCProviderArn=f"acs:ram::{UID}:oidc-provider/x"), "EntityNotExist.OIDCProvider"),
        (oidc(RoleArn=ROLE), "EntityNotExist.OIDCProvider"),
        ({"RoleArn": OIDC_ROLE, "OIDCProviderArn": PROVIDER}, "MissingOIDCToken"),
    ],
)
async def test_oidc_refusals(
    sts: tuple[RunningEmulator, Caller, FakeClock], params: dict[str, str], code: str
) -> None:
    _, caller, _ = sts
    assert (await anonymous(caller, params)).code == code


@pytest.mark.parametrize(
    ("action", "version", "code"),
    [
        ("GetCallerIdentity", STS_VERSION, "InvalidAction.NotFound"),
        ("AssumeRoleWithOIDC", "2020-04-20", "InvalidVersion"),
    ],
)
async def test_unknown_actions_and_versions(
    sts: tuple[RunningEmulator, Caller, FakeClock], action: str, version: str, code: str
) -> None:
    _, caller, _ = sts
    body = f"Action={action}&Version={version}".encode()
    reply = await caller.send("POST", caller.url, {"Content-Type": FORM}, body)
    assert reply.code == code


async def test_throttling_on_demand_then_fine(
    sts: tuple[RunningEmulator, Caller, FakeClock],
) -> None:
    emu, caller, _ = sts
    emu.sts.add_rule(FaultRule(code="Throttling.User", times=2, action="AssumeRoleWithOIDC"))
    codes: list[Any] = [(await anonymous(caller, oidc())).code for _ in range(3)]
    assert codes == ["Throttling.User", "Throttling.User", None]
    assert emu.sts.stats.codes() == ["Throttling.User", "Throttling.User"]


async def test_the_api_has_no_sts_and_sts_has_no_api(
    sts: tuple[RunningEmulator, Caller, FakeClock],
) -> None:
    emu, caller, _ = sts
    on_api = Caller(caller.session, emu.url, access_key_id=TRUSTED_ID, secret=TRUSTED_SECRET)
    reply = await on_api.call("AssumeRole", assume(), scheme="v1", in_body=True)
    assert reply.code == "ApiNotSupport"
    reply = await caller.call("QuerySessionByClientId", {"ClientId": "GID_a@@@b"}, scheme="v1")
    assert reply.code == "InvalidAction.NotFound"
