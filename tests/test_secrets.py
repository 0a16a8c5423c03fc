"""Secrets and exposure (issue 5): the keys that run a scan never show, TLS cannot be
quietly turned off, clear text goes nowhere but loopback.

A recognisable access key secret and STS token run failing and succeeding scans, in
process (every log record captured, at DEBUG) and as a real process; neither may
appear in stdout, stderr, the output or summary file, a log line, or the str/repr of
any error the client raises, even when a server or proxy echoes the request back.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from log_capture import Everything

from fleetscan import cli, progress
from fleetscan.cli import main
from fleetscan.client import OnsMqttClient, check_endpoint, make_ssl_context
from fleetscan.credentials import Credentials, StaticCredentials
from fleetscan.emulator import (
    DEFAULT_HOST,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    Faults,
    KeyPair,
    Limits,
    ThreadedEmulator,
    run_emulator,
    run_emulator_in_thread,
)
from fleetscan.emulator import command as emulator_command
from fleetscan.errors import ApiError, UsageError

REPO = Path(__file__).resolve().parent.parent
SECRET = "SECRET-fleetscan-canary-123"
TOKEN = "TOKEN-canary-456"
# The tails too: a secret cut short or re-encoded must not slip through either.
CANARIES = (SECRET, TOKEN, "canary-123", "canary-456")
KEY_ID = "STS.canary-key"
# Keys the emulator knows that our secret or token do not match.
OTHER_SECRET_ID = "STS.other-secret"
OTHER_TOKEN_ID = "STS.other-token"
IDS = [f"GID_secret@@@dev{i}" for i in range(60)] + ["GID_secret@@@bad id"]


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [canary for canary in CANARIES if canary in text]


@pytest.fixture(scope="module")
def emu() -> Iterator[ThreadedEmulator]:
    config = EmulatorConfig(
        keys=(
            KeyPair(access_key_id=KEY_ID, secret=SECRET, security_token=TOKEN),
            KeyPair(access_key_id=OTHER_SECRET_ID, secret="not-ours", security_token=TOKEN),
            KeyPair(access_key_id=OTHER_TOKEN_ID, secret=SECRET, security_token="not-ours"),
        ),
        limits=Limits(qps_single=5000, ip_limit=0),
    )
    with run_emulator_in_thread(config) as emulator:
        yield emulator


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment holding the canary key, and an empty home."""
    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "ALICLOUD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN)
    return tmp_path


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- scans in process: every stream, file and log line --------------------------------------

SCENARIOS: dict[str, tuple[dict[str, str], tuple[str, ...], set[int]]] = {
    # name: (environment changes, options, acceptable exit codes)
    "succeeding, v3, faults, progress": ({}, ("--progress",), {0, 1}),
    "succeeding, v1 (token in the URL)": ({}, ("--signature", "v1", "--progress"), {0, 1}),
    "records on stdout": ({}, ("--stdout",), {0, 1}),
    "too few attempts": ({}, ("--max-attempts", "1"), {1}),
    "secret refused, v3": ({"ALIBABA_CLOUD_ACCESS_KEY_ID": OTHER_SECRET_ID}, (), {3}),
    "secret refused, v1": (
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": OTHER_SECRET_ID},
        ("--signature", "v1"),
        {3},
    ),
    "token refused, v1": (
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": OTHER_TOKEN_ID},
        ("--signature", "v1"),
        {3},
    ),
    "unknown key": ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.nobody"}, (), {3}),
    "unknown instance": ({}, ("--instance-id", "mqtt-cn-nowhere"), {3}),
    "half a key pair": ({"ALIBABA_CLOUD_ACCESS_KEY_ID": ""}, (), {2}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_scan_shows_the_secret_or_the_token(
    emu: ThreadedEmulator,
    home: Path,
    logs: Everything,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
    scenario: str,
) -> None:
    env, options, codes = SCENARIOS[scenario]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)  # progress lines, many of them
    emu.control.set_faults(
        error_rate=0.1, overflow_rate=0.05, overflow_retry_after_share=0.5, drop_rate=0.02
    )
    source = home / "ids.txt"
    source.write_text("".join(f"{cid}\n" for cid in IDS))
    out = home / "out.ndjson"
    to_stdout = "--stdout" in options
    options = tuple(o for o in options if o != "--stdout")
    args = [
        "scan",
        "--endpoint",
        emu.url,
        "--instance-id",
        DEFAULT_INSTANCE_ID,
        "--summary",
        str(home / "summary.json"),
        *([] if to_stdout else ["-o", str(out)]),
        *options,
        str(source),
    ]
    try:
        code = main(args)
        if code in (1, 3) and not to_stdout:
            code = main([*args, "--resume"])  # and the run that picks up after it
    finally:
        emu.control.set_faults(error_rate=0, overflow_rate=0, drop_rate=0)
    captured = capsysbinary.readouterr()
    assert code in codes, captured.err.decode()
    assert not leaks(captured.out)
    assert not leaks(captured.err), captured.err.decode()
    assert logs.lines, "the scan logged nothing: is the capture working?"
    assert not leaks("\n".join(logs.lines))
    for name, data in files_under(home).items():
        if name != str(source):
            assert not leaks(data), name
    assert b"Traceback" not in captured.err
    if "--progress" in options:
        assert b" IDs  " in captured.err, "no progress line was shown"


def test_a_real_process_shows_neither_in_any_stream_or_file(
    emu: ThreadedEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{cid}\n" for cid in IDS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env.update(
        HOME=str(tmp_path),
        PYTHONPATH=str(REPO),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET,
        ALIBABA_CLOUD_SECURITY_TOKEN=TOKEN,
        # Python's own warnings and asyncio's debug reports go to stderr too.
        PYTHONWARNINGS="always",
        PYTHONASYNCIODEBUG="1",
    )
    for key_id, signature, expected in (
        (KEY_ID, "v1", 0),
        (OTHER_SECRET_ID, "v1", 3),
        (OTHER_TOKEN_ID, "v3", 3),
    ):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleetscan",
                "scan",
                "--endpoint",
                emu.url,
                "--instance-id",
                DEFAULT_INSTANCE_ID,
                "--signature",
                signature,
                "--progress",
                "--summary",
                str(tmp_path / "summary.json"),
                str(source),
            ],
            env={**env, "ALIBABA_CLOUD_ACCESS_KEY_ID": key_id},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == expected, run.stderr.decode()
        assert not leaks(run.stdout)
        assert not leaks(run.stderr), run.stderr.decode()
        assert not leaks((tmp_path / "summary.json").read_bytes())


# --- errors the client raises -----------------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    """A verbose proxy: its error page quotes the request, URL and headers."""
    seen = f"{request.method} {request.path_qs} {dict(request.headers)}"
    if "json" in request.query.get("ClientId", ""):
        body = {"Code": "BadGateway", "Message": f"upstream refused {seen}", "RequestId": "R"}
        return web.json_response(body, status=502)
    return web.Response(status=502, text=f"Bad gateway: {seen}", content_type="text/html")


def _exception_texts(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), *map(str, exc.args), *traceback.format_exception(exc)]
    if isinstance(exc, ApiError):
        parts += [exc.message, str(exc.to_record())]
    return "\n".join(parts)


@pytest.mark.parametrize("signature", ["v3", "v1"])
async def test_errors_the_client_raises_never_hold_the_secret_or_the_token(
    signature: Any,
) -> None:
    canary = Credentials(access_key_id=KEY_ID, access_key_secret=SECRET, security_token=TOKEN)
    wrong_key = Credentials(
        access_key_id=OTHER_SECRET_ID, access_key_secret=SECRET, security_token=TOKEN
    )
    config = EmulatorConfig(
        keys=(KeyPair(access_key_id=OTHER_SECRET_ID, secret="not-ours", security_token=TOKEN),),
        faults=Faults(slow_rate=1.0, slow_ms=0),
    )
    echo = web.Application()
    echo.router.add_post("/", _echo)
    raised: list[BaseException] = []
    async with (
        run_emulator(config) as emu,
        _serving(echo) as proxy,
        aiohttp.ClientSession() as session,
    ):
        targets = [
            (emu.url, wrong_key, 10.0, "GID_secret@@@dev1"),  # SignatureDoesNotMatch
            (emu.url, canary, 10.0, "GID_secret@@@dev1"),  # InvalidAccessKeyId.NotFound
            (proxy, canary, 10.0, "GID_secret@@@html"),  # an HTML page quoting the URL
            (proxy, canary, 10.0, "GID_secret@@@json"),  # a JSON error quoting it
            ("http://127.0.0.1:9/", canary, 10.0, "GID_secret@@@dev1"),  # refused
        ]
        for url, creds, timeout, client_id in targets:
            client = OnsMqttClient(
                session=session,
                credentials=StaticCredentials(creds),
                instance_id=DEFAULT_INSTANCE_ID,
                endpoint=url,
                signature=signature,
                timeout=timeout,
            )
            assert not leaks(repr(client))
            with pytest.raises(ApiError) as info:
                await client.query_session(client_id)
            raised.append(info.value)
    codes = [getattr(exc, "code", None) for exc in raised]
    assert codes == [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "HTTP502",
        "BadGateway",
        "ConnectionError",
    ]
    for exc in raised:
        assert not leaks(_exception_texts(exc)), _exception_texts(exc)
    assert not leaks(repr(canary) + str(canary) + repr(StaticCredentials(canary)))


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> Any:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


# --- credentials files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        (
            ".aliyun/config.json",
            '{"current": "default", "profiles": [{"name": "default", "mode": "StsToken", '
            f'"access_key_id": "{KEY_ID}", "access_key_secret": "{SECRET}", '
            f'"sts_token": "{TOKEN}", "region_id": "cn-hangzhou"}}]}}',
        ),
        (
            ".alibabacloud/credentials.ini",
            f"[default]\ntype = sts\naccess_key_id = {KEY_ID}\n"
            f"access_key_secret = {SECRET}\nsecurity_token = {TOKEN}\n",
        ),
    ],
    ids=["aliyun config.json", "credentials.ini"],
)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_a_credentials_file_others_may_read_earns_a_warning(
    emu: ThreadedEmulator,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    relative: str,
    text: str,
    mode: int,
) -> None:
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN")
    path = home / relative
    path.parent.mkdir(parents=True)
    path.write_text(text)
    path.chmod(mode)
    source = home / "ids.txt"
    source.write_text("GID_secret@@@dev1\n")
    code = main(["scan", "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID, str(source)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warning = f"is readable by other users; chmod 600 {path}"
    assert (warning in captured.err) is bool(mode & 0o077)
    assert not leaks(captured.err + captured.out)


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        (".aliyun/config.json", f'{{"profiles": [{{"access_key_secret": "{SECRET}", '),
        (".alibabacloud/credentials.ini", f"[default]\naccess_key_secret {SECRET}\n= {TOKEN}\n"),
        (
            ".aliyun/config.json",
            '{"profiles": [{"name": "default", "mode": "AK", '
            f'"access_key_secret": "{SECRET}"}}]}}',
        ),
    ],
    ids=["truncated JSON", "broken INI", "AK profile without a key ID"],
)
def test_a_broken_credentials_file_is_named_without_quoting_it(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    relative: str,
    text: str,
) -> None:
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name)
    path = home / relative
    path.parent.mkdir(parents=True)
    path.write_text(text)
    path.chmod(0o600)
    code = main(["scan", "--region", "cn-hangzhou", "--instance-id", "mqtt-cn-x", "-"])
    err = capsys.readouterr().err
    assert code == 2
    assert Path(relative).name in err
    assert not leaks(err), err


# --- TLS and clear text ------------------------------------------------------------------------


@pytest.mark.parametrize("ca_bundle", [False, True])
def test_tls_verification_is_always_on(tmp_path: Path, ca_bundle: bool) -> None:
    if ca_bundle:
        with run_emulator_in_thread(EmulatorConfig(tls=True)) as emu:
            assert emu.ca_file is not None
            context = make_ssl_context(str(emu.ca_file))
    else:
        context = make_ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


@pytest.mark.parametrize(
    "option", ["--insecure", "--no-verify", "--no-verify-ssl", "-k", "--ssl-no-verify"]
)
def test_there_is_no_option_to_turn_verification_off(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", option, "--instance-id", "mqtt-cn-x", "-"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_an_untrusted_certificate_stops_the_scan_whatever_the_environment(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Variables that loosen verification in other tools (Python's urllib, requests,
    # curl, Node) must not loosen it here.
    monkeypatch.setenv("PYTHONHTTPSVERIFY", "0")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    monkeypatch.setenv("NODE_TLS_REJECT_UNAUTHORIZED", "0")
    config = EmulatorConfig(tls=True, keys=(KeyPair(access_key_id=KEY_ID, secret=SECRET),))
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN")
    source = home / "ids.txt"
    source.write_text("GID_secret@@@dev1\n")
    with run_emulator_in_thread(config) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        args = ["scan", "--endpoint", emu.url, "--instance-id", DEFAULT_INSTANCE_ID, str(source)]
        assert main(args) == 3
        err = capsys.readouterr().err
        assert "TLSError" in err
        assert "certificate verify failed" in err
        assert emu.stats().requests == 0  # nothing was sent
        # Trusting the emulator's CA is the way, and verification stays on with it.
        assert main([*args, "--ca-bundle", str(emu.ca_file)]) == 0
        assert emu.stats().requests == 1


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://onsmqtt.cn-hangzhou.aliyuncs.com/",
        "HTTP://example.com/",
        "http://10.0.0.1:8080/",
        "http://192.168.1.10/",
        "http://0.0.0.0:8080/",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "ftp://127.0.0.1/",
        "http://user:pass@127.0.0.1/",
    ],
)
def test_clear_text_is_refused_for_anything_but_loopback(
    endpoint: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError):
        check_endpoint(endpoint)
    code = main(["scan", "--endpoint", endpoint, "--instance-id", "mqtt-cn-x", "-"])
    assert code == 2
    assert "endpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8080/", "http://127.1.2.3/", "http://localhost:8080", "http://[::1]:80/"],
)
def test_clear_text_to_loopback_is_allowed(endpoint: str) -> None:
    assert check_endpoint(endpoint).startswith("http://")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port``, from /proc/net/tcp{,6} (Linux)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(name) as table:
            for row in list(table)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
def test_the_emulator_listens_on_loopback_unless_told_otherwise() -> None:
    assert EmulatorConfig().host == DEFAULT_HOST == "127.0.0.1"
    parser = cli.build_parser()
    args = parser.parse_args(["emulator"])
    assert emulator_command.config_from_args(args).host == "127.0.0.1"
    with run_emulator_in_thread() as emu:
        # 0100007F is 127.0.0.1, little-endian: the only address it listens on.
        assert _listening_addresses(emu.port) == {"0100007F"}


def test_the_emulator_warns_when_told_to_listen_beyond_loopback() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetscan", "emulator", "--host", "0.0.0.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("url: ")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "warning: listening on 0.0.0.0, reachable beyond this machine" in err
