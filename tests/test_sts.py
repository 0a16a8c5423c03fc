"""Role assumption and OIDC (issue 13) against the emulator's STS.

Scans through ``main()`` with each mode (environment OIDC, each aliyun CLI mode,
each credentials.ini type, chained roles); refreshing across many expiries on a
virtual clock shared by the emulator, the client and the provider; a rotated token
file; STS throttled, slow or refusing; and no secret, STS token or OIDC token in
anything a scan writes, even when STS quotes the request back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from emulator_fixtures import START, SleepRecorder, ids
from log_capture import Everything

from fleetscan.cli import main
from fleetscan.client import OnsMqttClient
from fleetscan.credentials import (
    ResolvedCredentials,
    StsClient,
    StsEndpoint,
    resolve_credentials,
    sts_endpoint,
)
from fleetscan.credentials.sts import GLOBAL_STS_ENDPOINT, sts_margin
from fleetscan.credentials.value import Credentials
from fleetscan.emulator import (
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    FaultRule,
    KeyPair,
    Limits,
    RunningEmulator,
    StsConfig,
    StsRole,
    ThreadedEmulator,
    run_emulator,
    run_emulator_in_thread,
)
from fleetscan.engine import Scanner, ScanSettings
from fleetscan.errors import AccountError, CredentialsError, UsageError
from fleetscan.records import Status
from fleetscan.retry import RetryPolicy

UID = "1234567890123456"
ROLE = f"acs:ram::{UID}:role/fleet-audit"
EXT_ROLE = f"acs:ram::{UID}:role/fleet-audit-external"
CHAINED = f"acs:ram::{UID}:role/fleet-audit-second-hop"
OIDC_ROLE = f"acs:ram::{UID}:role/fleet-rrsa"
PROVIDER = f"acs:ram::{UID}:oidc-provider/ack-rrsa-c0ffee"
MISSING_ROLE = f"acs:ram::{UID}:role/nobody"
EXTERNAL_ID = "fleet-ext-42"
# Canaries: none of these may show anywhere.
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.OIDC-canary-789.sig"
OIDC_TOKEN_2 = "eyJhbGciOiJSUzI1NiJ9.OIDC-canary-rotated-012.sig"
SOURCE_ID = "LTAI.source"
SOURCE_SECRET = "SECRET-source-canary-123"
STS_SOURCE_ID = "STS.source"
STS_SOURCE_SECRET = "SECRET-sts-source-canary-345"
STS_SOURCE_TOKEN = "TOKEN-sts-source-canary-456"
# Known to the emulator with another secret: our signature cannot match.
WRONG_SOURCE_ID = "STS.wrong-secret"
CANARIES = (OIDC_TOKEN, OIDC_TOKEN_2, SOURCE_SECRET, STS_SOURCE_SECRET, STS_SOURCE_TOKEN)
ROOMY = Limits(qps_single=5000, qps_batch=5000, ip_limit=0)


def emulator_config(*, lifetime: float | None = None) -> EmulatorConfig:
    return EmulatorConfig(
        keys=(
            KeyPair(access_key_id=SOURCE_ID, secret=SOURCE_SECRET),
            KeyPair(
                access_key_id=STS_SOURCE_ID,
                secret=STS_SOURCE_SECRET,
                security_token=STS_SOURCE_TOKEN,
            ),
            KeyPair(
                access_key_id=WRONG_SOURCE_ID,
                secret="not-our-secret",
                security_token=STS_SOURCE_TOKEN,
            ),
        ),
        limits=ROOMY,
        sts=StsConfig(
            roles=(
                StsRole(arn=ROLE, trusted=(SOURCE_ID, STS_SOURCE_ID, WRONG_SOURCE_ID)),
                StsRole(arn=EXT_ROLE, trusted=(SOURCE_ID,), external_id=EXTERNAL_ID),
                StsRole(arn=CHAINED, trusted=(ROLE,)),
                StsRole(
                    arn=OIDC_ROLE,
                    oidc_provider_arn=PROVIDER,
                    oidc_tokens=(OIDC_TOKEN,),
                    max_session_seconds=7200,
                ),
            ),
            lifetime_seconds=lifetime,
        ),
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def cli_config(home: Path, *profiles: dict[str, Any], current: str = "default") -> Path:
    return write(
        home / ".aliyun" / "config.json",
        json.dumps({"current": current, "profiles": list(profiles)}),
    )


def ini(home: Path, text: str) -> Path:
    return write(home / ".alibabacloud" / "credentials.ini", text)


def calls(emu: RunningEmulator) -> list[tuple[Any, ...]]:
    """What STS was asked, call by call."""
    return [
        (c.action, c.role_arn, c.session_name, c.duration_seconds, c.access_key_id, c.code)
        for c in emu.sts.stats.calls
    ]


# --- scans with each mode, through main() --------------------------------------------------


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    with run_emulator_in_thread(emulator_config()) as emulator:
        yield emulator


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emu: ThreadedEmulator) -> Path:
    """No credentials but the test's; STS is the emulator's."""
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "ALICLOUD_", "FLEETSCAN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert emu.sts_url is not None
    monkeypatch.setenv("ALIBABA_CLOUD_STS_ENDPOINT", emu.sts_url)
    (tmp_path / "home").mkdir()
    write(tmp_path / "token", OIDC_TOKEN)
    return tmp_path / "home"


@dataclass
class Scan:
    code: int
    out: bytes
    err: str
    output: bytes
    summary: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.output.splitlines()]


def run_scan(
    tmp_path: Path, emu: ThreadedEmulator, capsys: pytest.CaptureFixture[bytes], *more: str
) -> Scan:
    id_file = write(tmp_path / "ids.txt", "".join(f"{cid}\n" for cid in ids(30)))
    output, summary = tmp_path / "out.ndjson", tmp_path / "summary.json"
    args = ["scan", "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID]
    args += ["-o", str(output), "--summary", str(summary), "--qps", "50", *more, str(id_file)]
    code = main(args)
    captured = capsys.readouterr()
    return Scan(
        code,
        captured.out,
        captured.err.decode(),
        output.read_bytes() if output.exists() else b"",
        orjson.loads(summary.read_bytes()) if summary.exists() else {},
    )


def _env_oidc(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ROLE_ARN", OIDC_ROLE)
    monkeypatch.setenv("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", PROVIDER)
    monkeypatch.setenv("ALIBABA_CLOUD_OIDC_TOKEN_FILE", str(home.parent / "token"))
    monkeypatch.setenv("ALIBABA_CLOUD_ROLE_SESSION_NAME", "rrsa-pod")


def _cli_oidc(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = {
        "name": "default",
        "mode": "OIDC",
        "ram_role_arn": OIDC_ROLE,
        "oidc_provider_arn": PROVIDER,
        "oidc_token_file": str(home.parent / "token"),
        "ram_session_name": "cli-oidc",
        "expired_seconds": 7200,
    }
    cli_config(home, profile)


def _cli_ram_role(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = {
        "name": "default",
        "mode": "RamRoleArn",
        "access_key_id": SOURCE_ID,
        "access_key_secret": SOURCE_SECRET,
        "ram_role_arn": EXT_ROLE,
        "ram_session_name": "cli-role",
        "expired_seconds": 1800,
        "external_id": EXTERNAL_ID,
    }
    cli_config(home, profile)


def _cli_chainable_from_sts(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = {
        "name": "sts-source",
        "mode": "StsToken",
        "access_key_id": STS_SOURCE_ID,
        "access_key_secret": STS_SOURCE_SECRET,
        "sts_token": STS_SOURCE_TOKEN,
    }
    chained = {
        "name": "audit",
        "mode": "ChainableRamRoleArn",
        "source_profile": "sts-source",
        "ram_role_arn": ROLE,
        "ram_session_name": "from-sts",
    }
    cli_config(home, source, chained, current="audit")


def _cli_chain_of_two_roles(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = {
        "name": "first-hop",
        "mode": "RamRoleArn",
        "access_key_id": SOURCE_ID,
        "access_key_secret": SOURCE_SECRET,
        "ram_role_arn": ROLE,
        "ram_session_name": "hop-1",
    }
    second = {
        "name": "second-hop",
        "mode": "ChainableRamRoleArn",
        "source_profile": "first-hop",
        "ram_role_arn": CHAINED,
        "ram_session_name": "hop-2",
    }
    cli_config(home, first, second)
    monkeypatch.setenv("ALIBABA_CLOUD_PROFILE", "second-hop")


def _ini_ram_role(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini(
        home,
        "[default]\ntype = ram_role_arn\n"
        f"access_key_id = {SOURCE_ID}\naccess_key_secret = {SOURCE_SECRET}\n"
        f"role_arn = {ROLE}\nrole_session_name = ini-role\n"
        'policy = {"Version": "1", "Statement": []}\n',
    )


def _ini_oidc(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini(
        home,
        "[default]\ntype = oidc_role_arn\n"
        f"role_arn = {OIDC_ROLE}\noidc_provider_arn = {PROVIDER}\n"
        f"oidc_token_file_path = {home.parent / 'token'}\nrole_session_name = ini-oidc\n",
    )


OIDC = "AssumeRoleWithOIDC"
ASSUME = "AssumeRole"
MODES = {
    "environment OIDC": (_env_oidc, [(OIDC, OIDC_ROLE, "rrsa-pod", "3600", None, None)]),
    "CLI OIDC": (_cli_oidc, [(OIDC, OIDC_ROLE, "cli-oidc", "7200", None, None)]),
    "CLI RamRoleArn": (_cli_ram_role, [(ASSUME, EXT_ROLE, "cli-role", "1800", SOURCE_ID, None)]),
    "CLI ChainableRamRoleArn, STS source": (
        _cli_chainable_from_sts,
        [(ASSUME, ROLE, "from-sts", "3600", STS_SOURCE_ID, None)],
    ),
    "CLI chain of two roles": (
        _cli_chain_of_two_roles,
        [
            (ASSUME, ROLE, "hop-1", "3600", SOURCE_ID, None),
            (ASSUME, CHAINED, "hop-2", "3600", "issued for hop 1", None),
        ],
    ),
    "credentials.ini ram_role_arn": (
        _ini_ram_role,
        [(ASSUME, ROLE, "ini-role", "3600", SOURCE_ID, None)],
    ),
    "credentials.ini oidc_role_arn": (
        _ini_oidc,
        [(OIDC, OIDC_ROLE, "ini-oidc", "3600", None, None)],
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_scan_runs_with_each_mode(
    mode: str,
    emu: ThreadedEmulator,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    setup, expected = MODES[mode]
    setup(home, monkeypatch)
    scan = run_scan(tmp_path, emu, capsysbinary)
    assert scan.code == 0, scan.err
    assert [r["status"] for r in scan.records].count("error") == 0
    assert len(scan.records) == 30
    issued = emu.sts.issued
    expected = [
        (*e[:4], issued[0].access_key_id if e[4] == "issued for hop 1" else e[4], e[5])
        for e in expected
    ]
    assert calls(emu) == expected
    # Every call of the scan was signed with the last role's keys.
    assert emu.stats().actions["QuerySessionByClientId"].successes == 30
    assert len(issued) == len(expected)
    for call in emu.sts.stats.calls:
        # A POST form: nothing in the URL, the OIDC token least of all.
        assert (call.method, call.query_names) == ("POST", ())
        assert call.content_type == "application/x-www-form-urlencoded"
    if mode == "credentials.ini ram_role_arn":
        assert emu.sts.stats.calls[0].policy == '{"Version": "1", "Statement": []}'
    if mode == "CLI RamRoleArn":
        assert emu.sts.stats.calls[0].external_id == EXTERNAL_ID


def test_environment_keys_still_come_before_oidc(
    emu: ThreadedEmulator,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    _env_oidc(home, monkeypatch)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", SOURCE_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SOURCE_SECRET)
    assert run_scan(tmp_path, emu, capsysbinary).code == 0
    assert calls(emu) == []


def test_oidc_comes_before_the_cli_profile(
    emu: ThreadedEmulator,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    _cli_ram_role(home, monkeypatch)
    _env_oidc(home, monkeypatch)
    assert run_scan(tmp_path, emu, capsysbinary).code == 0
    assert [c[0] for c in calls(emu)] == [OIDC]


# --- refusals: exit 3, and no secret anywhere ------------------------------------------------


def _bad_oidc_token(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_oidc(home, monkeypatch)
    write(home.parent / "token", OIDC_TOKEN_2)  # one STS does not know


def _unknown_role(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_oidc(home, monkeypatch)
    monkeypatch.setenv("ALIBABA_CLOUD_ROLE_ARN", MISSING_ROLE)


def _signature_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = {
        "name": "sts-source",
        "mode": "StsToken",
        "access_key_id": WRONG_SOURCE_ID,
        "access_key_secret": STS_SOURCE_SECRET,
        "sts_token": STS_SOURCE_TOKEN,
    }
    chained = {
        "name": "default",
        "mode": "ChainableRamRoleArn",
        "source_profile": "sts-source",
        "ram_role_arn": ROLE,
    }
    cli_config(home, source, chained)


REFUSALS = {
    # name: (setup, STS code, whether STS quoted a secret back)
    "unknown role": (_unknown_role, "EntityNotExist.Role", False),
    "OIDC token refused (quoted back)": (_bad_oidc_token, "AuthenticationFail.OIDCToken", True),
    "AssumeRole signature refused (string to sign quoted back)": (
        _signature_refused,
        "SignatureDoesNotMatch",
        True,
    ),
}


def leaks(text: str | bytes, secrets: tuple[str, ...]) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [s for s in secrets if s in text]


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refused_assumption_stops_the_scan_with_exit_3_and_shows_no_secret(
    refusal: str,
    emu: ThreadedEmulator,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: Everything,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    setup, code, quoted = REFUSALS[refusal]
    setup(home, monkeypatch)
    scan = run_scan(tmp_path, emu, capsysbinary)
    assert scan.code == 3, scan.err
    assert f"stopped: {code}" in scan.err
    assert scan.summary["outcome"] == "aborted"
    assert code in scan.summary["abort_reason"]
    assert [c[5] for c in calls(emu)] == [code]  # refused once: never retried
    assert emu.stats().actions["QuerySessionByClientId"].requests == 0
    if quoted:
        assert "<redacted>" in scan.err  # STS did quote it: the test is not vacuous
    everything = (scan.out, scan.err, scan.output, json.dumps(scan.summary), *logs.lines)
    for text in everything:
        assert leaks(text, CANARIES) == []


def test_a_scan_with_assumed_roles_shows_no_secret_of_any_hop(
    emu: ThreadedEmulator,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: Everything,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    _cli_chainable_from_sts(home, monkeypatch)
    for signature in ("v3", "v1"):  # v1 puts the issued token in the API's URL
        scan = run_scan(tmp_path, emu, capsysbinary, "--signature", signature, "--progress")
        assert scan.code == 0, scan.err
        issued = tuple(s for key in emu.sts.issued for s in (key.secret, key.security_token) if s)
        everything = (scan.out, scan.err, scan.output, json.dumps(scan.summary), *logs.lines)
        assert any("STS" in line for line in logs.lines)  # DEBUG did log the assumption
        for text in everything:
            assert leaks(text, (*CANARIES, *issued)) == []


# --- virtual time: many expiries in one scan --------------------------------------------------


class VirtualClock:
    """Seconds since the epoch for the emulator; `utc` is the same instant for fleetscan."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


class Watched:
    """A provider that remembers which key each get() handed out."""

    def __init__(self, inner: ResolvedCredentials) -> None:
        self.inner = inner.provider
        self.keys: list[str] = []

    async def get(self) -> Credentials:
        credentials = await self.inner.get()
        self.keys.append(credentials.access_key_id)
        return credentials


@dataclass
class Rig:
    emu: RunningEmulator
    clock: VirtualClock
    session: aiohttp.ClientSession
    home: Path
    sleeps: SleepRecorder = field(default_factory=SleepRecorder)

    def env(self, **more: str) -> dict[str, str]:
        assert self.emu.sts_url is not None
        return {
            "ALIBABA_CLOUD_ROLE_ARN": OIDC_ROLE,
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER,
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(self.home / "token"),
            "ALIBABA_CLOUD_STS_ENDPOINT": self.emu.sts_url,
            **more,
        }

    async def resolve(self, env: dict[str, str] | None = None) -> ResolvedCredentials:
        return await resolve_credentials(
            env=self.env() if env is None else env,
            home=self.home,
            metadata_url=None,
            session=self.session,
            clock=self.clock.utc,
            sleep=self.sleeps,
        )

    def client(self, provider: Any) -> OnsMqttClient:
        return OnsMqttClient(
            session=self.session,
            credentials=provider,
            instance_id=DEFAULT_INSTANCE_ID,
            endpoint=self.emu.url,
            clock=self.clock.utc,
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = VirtualClock()
    write(tmp_path / "token", OIDC_TOKEN)
    async with (
        run_emulator(emulator_config(), clock=clock) as emulator,
        aiohttp.ClientSession() as session,
    ):
        yield Rig(emulator, clock, session, tmp_path)


async def test_credentials_expire_many_times_in_one_scan_with_no_failed_call(rig: Rig) -> None:
    lifetime = 900  # STS's shortest; the margin is then a quarter of it (225 s)
    cli_config(
        rig.home,
        {
            "name": "default",
            "mode": "OIDC",
            "ram_role_arn": OIDC_ROLE,
            "oidc_provider_arn": PROVIDER,
            "oidc_token_file": str(rig.home / "token"),
            "expired_seconds": lifetime,
        },
    )
    env = {"ALIBABA_CLOUD_STS_ENDPOINT": rig.env()["ALIBABA_CLOUD_STS_ENDPOINT"]}
    provider = Watched(await rig.resolve(env))
    settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, qps=500, concurrency=4)
    scanner = Scanner(client=rig.client(provider), settings=settings)
    records = []

    def emit(record: Any) -> None:
        records.append(record)
        # Every answer moves time on 30 s: 240 answers, 2 hours. With 4 calls in flight
        # a call signed now lands at most 90 s later, inside half the margin (112 s).
        rig.clock.now += 30

    outcome = await scanner.run(ids(240), emit=emit)
    assert outcome == "completed", scanner.abort_error
    assert [r.status for r in records if r.status is Status.ERROR] == []
    api = rig.emu.stats().actions["QuerySessionByClientId"]
    assert (api.requests, api.successes, api.rejected) == (240, 240, 0)
    issued = rig.emu.sts.stats.issued()
    # Two hours of 900 s credentials renewed 225 s early: one STS call per 675-720 s.
    assert 7200 / 720 <= issued <= 7200 / 675 + 1
    # Exactly one call per expiry: each issued key was used, in order, none twice over.
    used = list(dict.fromkeys(provider.keys))
    assert used == [k.access_key_id for k in rig.emu.sts.issued]
    assert rig.emu.sts.stats.codes() == []


async def test_a_refresh_is_one_sts_call_however_many_ask(rig: Rig) -> None:
    resolved = await rig.resolve()
    first = await resolved.provider.get()
    assert first.expiration is not None
    rig.emu.sts.latency = 0.05  # the refresh takes a while: others ask meanwhile
    # Due for refresh but not expired: the callers keep going with what they have.
    rig.clock.now = (first.expiration - sts_margin(timedelta(hours=1))).timestamp()
    got = await asyncio.gather(*(resolved.provider.get() for _ in range(50)))
    assert rig.emu.sts.stats.issued() == 2
    assert {c.access_key_id for c in got} == {
        first.access_key_id,
        rig.emu.sts.issued[1].access_key_id,
    }
    # Expired: every caller waits for the one refresh.
    rig.clock.now = first.expiration.timestamp() + 3600
    got = await asyncio.gather(*(resolved.provider.get() for _ in range(50)))
    assert rig.emu.sts.stats.issued() == 3
    assert {c.access_key_id for c in got} == {rig.emu.sts.issued[2].access_key_id}


async def test_a_rotated_token_file_is_read_at_the_next_refresh(rig: Rig) -> None:
    resolved = await rig.resolve()
    first = await resolved.provider.get()
    assert first.expiration is not None
    # The cluster rotates the token; STS stops accepting the old one.
    write(rig.home / "token", OIDC_TOKEN_2)
    rig.emu.sts.set_role(
        StsRole(arn=OIDC_ROLE, oidc_provider_arn=PROVIDER, oidc_tokens=(OIDC_TOKEN_2,))
    )
    rig.clock.now = first.expiration.timestamp() - 60
    fresh = await resolved.provider.get()
    assert fresh.access_key_id != first.access_key_id
    assert rig.emu.sts.stats.codes() == []
    client = rig.client(resolved.provider)
    assert (await client.query_session(ids(1)[0])).request_id


async def test_sts_throttled_then_fine(rig: Rig) -> None:
    rig.emu.sts.add_rule(FaultRule(code="Throttling.User", times=2))
    rig.emu.sts.add_rule(FaultRule(code="ServiceUnavailable", times=1))
    resolved = await rig.resolve()
    client = rig.client(resolved.provider)
    assert (await client.query_session(ids(1)[0])).request_id
    assert rig.emu.sts.stats.codes() == ["Throttling.User", "Throttling.User", "ServiceUnavailable"]
    assert rig.emu.sts.stats.issued() == 1
    assert len(rig.sleeps.delays) == 3  # backed off before each retry


async def test_sts_throttled_for_good_is_account_wide(rig: Rig) -> None:
    rig.emu.sts.add_rule(FaultRule(code="Throttling.User", times=100))
    resolved = await rig.resolve()
    with pytest.raises(AccountError) as info:
        await resolved.provider.get()
    assert info.value.code == "Throttling.User"
    assert f"STS AssumeRoleWithOIDC of {OIDC_ROLE} failed after 6 attempts" in str(info.value)
    assert len(rig.emu.sts.stats.calls) == 6


async def test_a_role_removed_during_a_scan_stops_it_once_the_credentials_expire(
    rig: Rig,
) -> None:
    resolved = await rig.resolve()
    settings = ScanSettings(instance_id=DEFAULT_INSTANCE_ID, qps=500, concurrency=2)
    scanner = Scanner(client=rig.client(resolved.provider), settings=settings)
    records: list[Any] = []

    def emit(record: Any) -> None:
        records.append(record)
        rig.clock.now += 120
        if len(records) == 5:
            rig.emu.sts.remove_role(OIDC_ROLE)

    outcome = await scanner.run(ids(200), emit=emit)
    assert outcome == "aborted"
    assert scanner.abort_error is not None
    assert scanner.abort_error.code == "EntityNotExist.Role"
    assert [r.status for r in records if r.status is Status.ERROR] == []
    # The current credentials served on (with a warning) until they expired: 3600 s.
    assert 3600 / 120 - 2 <= len(records) <= 3600 / 120 + 2


async def test_a_vanished_token_file_is_account_wide_once_the_credentials_expire(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    resolved = await rig.resolve()
    first = await resolved.provider.get()
    assert first.expiration is not None
    (rig.home / "token").unlink()
    rig.clock.now = first.expiration.timestamp() - 60
    with caplog.at_level(logging.WARNING, logger="fleetscan"):
        assert (await resolved.provider.get()) == first
    assert "cannot read the OIDC token file" in caplog.text
    rig.clock.now = first.expiration.timestamp()
    with pytest.raises(AccountError) as info:
        await resolved.provider.get()
    assert info.value.code == "OIDCTokenFileUnreadable"


async def test_issued_credentials_work_on_the_api_until_they_expire(rig: Rig) -> None:
    resolved = await rig.resolve()
    credentials = await resolved.provider.get()
    assert credentials.expiration is not None
    static = OnsMqttClient(
        session=rig.session,
        credentials=_Fixed(credentials),
        instance_id=DEFAULT_INSTANCE_ID,
        endpoint=rig.emu.url,
        clock=rig.clock.utc,
    )
    await static.query_session(ids(1)[0])
    rig.clock.now = credentials.expiration.timestamp()
    with pytest.raises(AccountError) as info:
        await static.query_session(ids(1)[0])
    assert info.value.code == "InvalidSecurityToken.Expired"


class _Fixed:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def get(self) -> Credentials:
        return self.credentials


async def test_short_lifetimes_from_the_emulator_refresh_in_proportion(rig: Rig) -> None:
    rig.emu.sts.config = StsConfig(roles=(), lifetime_seconds=4)
    resolved = await rig.resolve()
    first = await resolved.provider.get()
    assert first.expiration == rig.clock.utc() + timedelta(seconds=4)
    rig.clock.now += 2.9  # a quarter of 4 s before expiry is 3 s: not yet
    assert (await resolved.provider.get()) == first
    rig.clock.now += 0.1
    assert (await resolved.provider.get()).access_key_id != first.access_key_id


async def test_the_global_endpoint_says_so_when_it_is_slow(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    assert rig.emu.sts_url is not None
    rig.emu.sts.latency = 0.2

    async def assume(is_global: bool) -> None:
        endpoint = StsEndpoint(url=rig.emu.sts_url or "", chosen_by="test", is_global=is_global)
        sts = StsClient(endpoint, session=rig.session, clock=rig.clock.utc, slow_seconds=0.1)
        await sts.assume_role_with_oidc(
            role_arn=OIDC_ROLE,
            provider_arn=PROVIDER,
            token_file=rig.home / "token",
            session_name="slow",
        )

    with caplog.at_level(logging.WARNING, logger="fleetscan"):
        await assume(is_global=False)
        assert caplog.text == ""
        await assume(is_global=True)
    assert "took 0.2 s; the global STS endpoint sts.aliyuncs.com is in mainland China" in (
        caplog.text
    )
    assert "ALIBABA_CLOUD_STS_REGION" in caplog.text


async def test_an_unreachable_sts_is_retried_then_account_wide(rig: Rig) -> None:
    endpoint = StsEndpoint(url="http://127.0.0.1:9/", chosen_by="test", is_global=True)
    sts = StsClient(
        endpoint, clock=rig.clock.utc, sleep=rig.sleeps, retry=RetryPolicy(max_attempts=2)
    )
    with pytest.raises(AccountError) as info:
        await sts.assume_role_with_oidc(
            role_arn=OIDC_ROLE,
            provider_arn=PROVIDER,
            token_file=rig.home / "token",
            session_name="x",
        )
    assert info.value.code == "ConnectionError"
    assert "after 2 attempts" in info.value.message
    assert "set ALIBABA_CLOUD_STS_REGION" in info.value.message


# --- profiles that cannot work ------------------------------------------------------------


async def test_a_cycle_of_source_profiles_is_refused(tmp_path: Path) -> None:
    def chainable(name: str, source: str) -> dict[str, Any]:
        return {
            "name": name,
            "mode": "ChainableRamRoleArn",
            "source_profile": source,
            "ram_role_arn": ROLE,
        }

    cli_config(tmp_path, chainable("a", "b"), chainable("b", "c"), chainable("c", "a"), current="a")
    with pytest.raises(CredentialsError) as info:
        await resolve_credentials(env={}, home=tmp_path, metadata_url=None)
    assert str(info.value) == (
        "~/.aliyun/config.json profile 'c': source_profile makes a cycle ('a' -> 'b' -> 'c' -> 'a')"
    )
    cli_config(tmp_path, chainable("a", "a"), current="a")
    with pytest.raises(CredentialsError, match=r"makes a cycle \('a' -> 'a'\)"):
        await resolve_credentials(env={}, home=tmp_path, metadata_url=None)


@pytest.mark.parametrize(
    ("profile", "problem"),
    [
        (
            {"mode": "RamRoleArn", "access_key_id": "x", "access_key_secret": "y"},
            "has no ram_role_arn",
        ),
        ({"mode": "ChainableRamRoleArn", "ram_role_arn": ROLE}, "has no source_profile"),
        (
            {"mode": "ChainableRamRoleArn", "ram_role_arn": ROLE, "source_profile": "gone"},
            "source_profile 'gone' is not a profile of ~/.aliyun/config.json",
        ),
        (
            {"mode": "OIDC", "ram_role_arn": ROLE, "oidc_token_file": "/t"},
            "has no oidc_provider_arn",
        ),
        (
            {
                "mode": "RamRoleArn",
                "access_key_id": "x",
                "access_key_secret": "y",
                "ram_role_arn": ROLE,
                "expired_seconds": "soon",
            },
            "expired_seconds is not a whole number of seconds",
        ),
    ],
)
async def test_incomplete_role_profiles_are_named(
    tmp_path: Path, profile: dict[str, Any], problem: str
) -> None:
    cli_config(tmp_path, {"name": "default", **profile})
    with pytest.raises(CredentialsError) as info:
        await resolve_credentials(env={}, home=tmp_path, metadata_url=None)
    assert problem in str(info.value)


async def test_a_missing_token_file_is_a_credentials_error_before_any_call(tmp_path: Path) -> None:
    env = {
        "ALIBABA_CLOUD_ROLE_ARN": OIDC_ROLE,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER,
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(tmp_path / "nowhere"),
    }
    with pytest.raises(CredentialsError, match="cannot read the OIDC token file"):
        await resolve_credentials(env=env, home=tmp_path, metadata_url=None)


# --- the STS endpoint, and the margin ----------------------------------------------------


@pytest.mark.parametrize(
    ("env", "url", "is_global"),
    [
        ({}, GLOBAL_STS_ENDPOINT, True),
        (
            {"ALIBABA_CLOUD_STS_REGION": "ap-southeast-1"},
            "https://sts.ap-southeast-1.aliyuncs.com/",
            False,
        ),
        (
            {
                "ALIBABA_CLOUD_STS_REGION": "cn-hangzhou",
                "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true",
            },
            "https://sts-vpc.cn-hangzhou.aliyuncs.com/",
            False,
        ),
        (
            {
                "ALIBABA_CLOUD_STS_ENDPOINT": "sts.eu-central-1.aliyuncs.com",
                "ALIBABA_CLOUD_STS_REGION": "cn-x",
            },
            "https://sts.eu-central-1.aliyuncs.com/",
            False,
        ),
        ({"ALIBABA_CLOUD_STS_ENDPOINT": "http://127.0.0.1:8080"}, "http://127.0.0.1:8080/", False),
        ({"ALIBABA_CLOUD_STS_ENDPOINT": "http://[::1]:8080/"}, "http://[::1]:8080/", False),
    ],
)
def test_the_sts_endpoint(env: dict[str, str], url: str, is_global: bool) -> None:
    endpoint = sts_endpoint(env)
    assert (endpoint.url, endpoint.is_global) == (url, is_global)


@pytest.mark.parametrize(
    "env",
    [
        {"ALIBABA_CLOUD_STS_ENDPOINT": "http://sts.cn-hangzhou.aliyuncs.com"},
        {"ALIBABA_CLOUD_STS_ENDPOINT": "http://10.0.0.1:8080"},
        {"ALIBABA_CLOUD_STS_ENDPOINT": "https://sts.example/some/path"},
        {"ALIBABA_CLOUD_STS_REGION": "cn hangzhou/x"},
    ],
)
def test_an_unusable_sts_endpoint_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        sts_endpoint(env)


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [
        (timedelta(hours=12), timedelta(minutes=15)),
        (timedelta(hours=1), timedelta(minutes=15)),
        (timedelta(seconds=900), timedelta(seconds=225)),
        (timedelta(seconds=4), timedelta(seconds=1)),
    ],
)
def test_the_refresh_margin_is_alibabas_or_a_quarter_of_short_lives(
    lifetime: timedelta, margin: timedelta
) -> None:
    assert sts_margin(lifetime) == margin


def test_sts_over_tls_trusts_the_ca_bundle_given_for_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = emulator_config()
    config = EmulatorConfig(keys=config.keys, limits=ROOMY, sts=config.sts, tls=True)
    with run_emulator_in_thread(config) as emu:
        assert emu.sts_url is not None
        assert emu.sts_url.startswith("https://")
        for name in list(os.environ):
            if name.startswith(("ALIBABA_CLOUD_", "ALICLOUD_")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        monkeypatch.setenv("ALIBABA_CLOUD_STS_ENDPOINT", emu.sts_url)
        _env_oidc(tmp_path / "home", monkeypatch)
        write(tmp_path / "token", OIDC_TOKEN)
        scan = run_scan(tmp_path, emu, capsysbinary, "--ca-bundle", str(emu.ca_file))
        assert scan.code == 0, scan.err
        assert emu.sts.stats.issued() == 1
        # Without the bundle, STS's certificate does not verify: nothing is sent.
        scan = run_scan(tmp_path, emu, capsysbinary)
        assert scan.code == 3, scan.err
        assert f"stopped: TLSError (no response): STS at {emu.sts_url}: TLS failed" in scan.err
        assert len(emu.sts.stats.calls) == 1  # the first scan's: no handshake, no call


@pytest.mark.slow
def test_a_real_time_scan_outlives_several_short_expiries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # Real time, through main(): credentials of 4-5 s (whole seconds) over a scan of
    # about 10 s; the margin is then at least a second.
    with run_emulator_in_thread(emulator_config(lifetime=5)) as emu:
        assert emu.sts_url is not None
        for name in list(os.environ):
            if name.startswith(("ALIBABA_CLOUD_", "ALICLOUD_")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        monkeypatch.setenv("ALIBABA_CLOUD_STS_ENDPOINT", emu.sts_url)
        _env_oidc(tmp_path / "home", monkeypatch)
        write(tmp_path / "token", OIDC_TOKEN)
        id_file = write(tmp_path / "ids.txt", "".join(f"{c}\n" for c in ids(300)))
        target = ["scan", "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID]
        code = main([*target, "--qps", "30", "-o", str(tmp_path / "out.ndjson"), str(id_file)])
        captured = capsysbinary.readouterr()
        assert code == 0, captured.err
        api = emu.stats().actions["QuerySessionByClientId"]
        assert (api.successes, api.rejected) == (300, 0)
        # About 10 s of 4-5 s credentials renewed a quarter early: 3 to 4 renewals.
        assert 3 <= emu.sts.stats.issued() <= 5
        assert emu.sts.stats.codes() == []


async def test_a_reused_nonce_is_signed_afresh_once(rig: Rig) -> None:
    ini(
        rig.home,
        f"[default]\ntype = ram_role_arn\naccess_key_id = {SOURCE_ID}\n"
        f"access_key_secret = {SOURCE_SECRET}\nrole_arn = {ROLE}\n",
    )
    rig.emu.sts.add_rule(FaultRule(code="SignatureNonceUsed", times=1))
    env = {"ALIBABA_CLOUD_STS_ENDPOINT": rig.env()["ALIBABA_CLOUD_STS_ENDPOINT"]}
    assert (await (await rig.resolve(env)).provider.get()).access_key_id.startswith("STS.")
    assert [c[5] for c in calls(rig.emu)] == ["SignatureNonceUsed", None]


async def test_assumed_credentials_name_the_role_s_account_through_every_refresh(
    rig: Rig,
) -> None:
    # The shared budget's keys are per account: a temporary key changes at every
    # refresh and from pod to pod, the account its role names does not.
    from fleetscan.engine.shared import LimiterSettings, budget_account

    limiter = LimiterSettings(url="redis://127.0.0.1:6379/0")
    resolved = await rig.resolve()
    first = await resolved.provider.get()
    assert first.account == UID
    assert first.expiration is not None
    rig.clock.now = first.expiration.timestamp() + 3600
    second = await resolved.provider.get()
    assert second.access_key_id != first.access_key_id
    assert second.account == UID
    assert budget_account(limiter, first) == budget_account(limiter, second)
    # Another pod assumes the role on its own: another key, the same budget.
    other = await (await rig.resolve()).provider.get()
    assert other.access_key_id not in (first.access_key_id, second.access_key_id)
    assert budget_account(limiter, other) == budget_account(limiter, first)
