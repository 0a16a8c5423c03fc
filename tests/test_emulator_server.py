"""Running the emulator: in a thread, over TLS, and as the ``fleetscan emulator`` command."""

from __future__ import annotations

import argparse
import io
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
from emulator_fixtures import serving

import fleetscan
from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Limits,
    command,
    run_emulator,
    run_emulator_in_thread,
)
from fleetscan.signing import canonical_query, sign_v1

REPO = Path(fleetscan.__file__).resolve().parent.parent


def _v1_url(
    base: str,
    client_id: str,
    *,
    key_id: str = DEFAULT_ACCESS_KEY_ID,
    secret: str = DEFAULT_ACCESS_KEY_SECRET,
    nonce: str = "n",
) -> str:
    params = {
        "Action": "QuerySessionByClientId",
        "Version": "2020-04-20",
        "InstanceId": DEFAULT_INSTANCE_ID,
        "ClientId": client_id,
    }
    signed = sign_v1(
        "GET",
        params,
        access_key_id=key_id,
        secret=secret,
        timestamp=datetime.now(UTC),
        nonce=f"{nonce}-{os.urandom(8).hex()}",
    )
    return f"{base}?{canonical_query(signed)}"


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_in_thread_serves_sync_callers_and_stats_are_thread_safe() -> None:
    with run_emulator_in_thread(EmulatorConfig(limits=Limits(qps_single=2))) as emu:
        assert emu.url.startswith("http://127.0.0.1:")
        assert emu.port != 0
        status, body = _get(_v1_url(emu.url, "GID_test@@@dev1"))
        assert status == 200
        assert body["OnlineStatus"] is emu.fleet.is_online("GID_test@@@dev1")
        emu.control.revoke_key(DEFAULT_ACCESS_KEY_ID)
        status, body = _get(_v1_url(emu.url, "GID_test@@@dev1"))
        assert (status, body["Code"]) == (400, "InvalidAccessKeyId.Inactive")
        stats = emu.stats()
        assert (stats.requests, stats.successes) == (2, 1)
        emu.reset()
        assert emu.stats().requests == 0
        url = emu.url
    with pytest.raises(urllib.error.URLError):
        _get(url)  # stopped with the block


async def test_tls_serves_https_trusted_through_the_ca_file() -> None:
    async with serving(EmulatorConfig(tls=True)) as (emu, caller):
        assert emu.url.startswith("https://127.0.0.1:")
        assert emu.ca_file is not None
        assert emu.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await caller.single("GID_test@@@dev1")  # the system trust store says no
        trusted = ssl.create_default_context(cafile=str(emu.ca_file))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as session:
            caller.session = session
            reply = await caller.single("GID_test@@@dev1")
        ca_file = emu.ca_file
    assert reply.status == 200
    assert not ca_file.exists()  # a temporary CA goes with the emulator


async def test_tls_dir_keeps_the_ca_file(tmp_path: Path) -> None:
    async with run_emulator(EmulatorConfig(tls=True, tls_dir=tmp_path / "tls")) as emu:
        assert emu.ca_file == tmp_path / "tls" / "fleetscan-emulator-ca.pem"
    assert (tmp_path / "tls" / "fleetscan-emulator-ca.pem").exists()


async def test_tls_without_trustme_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # makes `import trustme` fail
    with pytest.raises(RuntimeError, match=r"pip install fleetscan\[tls\]"):
        async with run_emulator(EmulatorConfig(tls=True)):
            pass


# --- the command ----------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_options_make_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(command.SECRET_ENV, "from-the-environment")
    config = command.config_from_args(
        _parse(
            [
                "--qps-single=50",
                "--qps-batch=5",
                "--ip-limit=0",
                "--error-rate=0.1",
                "--slow-rate=0.01",
                "--slow-ms=9000",
                "--instance-id=mqtt-cn-a",
                "--instance-id=post-cn-b",
                "--legacy-statuses",
                "--access-key-id=MYKEY",
            ]
        )
    )
    assert (config.limits.qps_single, config.limits.qps_batch, config.limits.ip_limit) == (
        50,
        5,
        0,
    )
    assert (config.faults.error_rate, config.faults.slow_ms) == (0.1, 9000)
    assert config.instance_ids == ("mqtt-cn-a", "post-cn-b")
    assert config.legacy_statuses
    assert config.limits.ip_limit_scope == "all"
    assert command.config_from_args(_parse(["--ip-limit-per-api"])).limits.ip_limit_scope == (
        "action"
    )
    assert config.keys[0].access_key_id == "MYKEY"
    assert config.keys[0].secret == "from-the-environment"


def test_bad_options_exit_2_with_a_message() -> None:
    err = io.StringIO()
    assert command.run(_parse(["--error-rate=2"]), out=io.StringIO(), err=err) == 2
    assert "error_rate must be within 0..1" in err.getvalue()


@contextmanager
def _start(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """The command in a subprocess, killed (if still running) and reaped at the end."""
    code = (
        "import argparse, sys\n"
        "from fleetscan.emulator import command\n"
        "parser = argparse.ArgumentParser()\n"
        "command.add_arguments(parser)\n"
        "sys.exit(command.run(parser.parse_args()))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def _banner(proc: subprocess.Popen[str], lines: int) -> dict[str, str]:
    """The first ``lines`` of stdout, as a dict; waits until the command serves."""
    assert proc.stderr is not None
    assert proc.stdout is not None
    line = proc.stderr.readline()  # stdout is complete once stderr says it serves
    assert line.startswith("serving"), line + proc.stderr.read()
    pairs = [proc.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(lines)]
    return {name: value for name, value in pairs}


def test_command_prints_where_it_listens_and_stops_on_sigint() -> None:
    with _start(["--host", "127.0.0.1", "--port", "0"]) as proc:
        banner = _banner(proc, 5)
        assert banner["url"].startswith("http://127.0.0.1:")
        assert not banner["url"].endswith(":0/")
        assert banner["instance_id"] == DEFAULT_INSTANCE_ID
        assert banner["region"] == "cn-hangzhou"
        assert banner["access_key_id"] == DEFAULT_ACCESS_KEY_ID
        # The documented demo secret is printed (a user's own never is).
        assert banner["access_key_secret"] == DEFAULT_ACCESS_KEY_SECRET
        status, _ = _get(_v1_url(banner["url"], "GID_test@@@dev1"))
        assert status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_command_with_tls_and_a_real_secret(tmp_path: Path) -> None:
    secret = "a-secret-of-the-user's"
    with _start(
        ["--tls", "--tls-dir", str(tmp_path), "--access-key-id", "USERKEY"],
        env={command.SECRET_ENV: secret},
    ) as proc:
        banner = _banner(proc, 5)
        assert banner["url"].startswith("https://127.0.0.1:")
        assert banner["ca_file"] == str(tmp_path / "fleetscan-emulator-ca.pem")
        assert "access_key_secret" not in banner
        context = ssl.create_default_context(cafile=banner["ca_file"])
        status, body = _get(
            _v1_url(banner["url"], "GID_test@@@dev1", key_id="USERKEY", secret=secret),
            context,
        )
        assert status == 200, body
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert secret not in out + err


def test_sts_options_make_its_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-token-of-tests\n")
    role = "acs:ram::1:role/audit"
    oidc = ["--sts-oidc-provider", "acs:ram::1:oidc-provider/p"]
    oidc += ["--sts-oidc-token-file", str(token)]
    config = command.config_from_args(_parse(["--sts-role", role, *oidc, "--sts-lifetime", "30"]))
    assert config.sts is not None
    assert config.sts.lifetime_seconds == 30
    (only,) = config.sts.roles
    assert (only.arn, only.oidc_tokens, only.trusted) == (role, ("a-token-of-tests",), ())
    assert command.config_from_args(_parse([])).sts is None
    for bad in (["--sts-lifetime", "5"], ["--sts-role", role, "--sts-oidc-provider", "p"]):
        err = io.StringIO()
        assert command.run(_parse(bad), out=io.StringIO(), err=err) == 2
        assert "--sts" in err.getvalue()


def test_command_with_sts_prints_its_url() -> None:
    with _start(["--sts-role", "acs:ram::1:role/audit"]) as proc:
        banner = _banner(proc, 6)
        assert banner["sts_url"].startswith("http://127.0.0.1:")
        assert banner["sts_url"] != banner["url"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
