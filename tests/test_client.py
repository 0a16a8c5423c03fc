"""OnsMqttClient against small loopback fakes that verify signatures as the server does.

`FakeApi` is an aiohttp.web app: it checks every request with `verify_v1`/`verify_v3`
on the raw query string it received, refuses reused nonces, and answers as a test
scripts it. Network faults (drops, garbage, stalls) use raw asyncio servers.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
import trustme
from aiohttp import web
from virtual_loop import VirtualLoop

from fleetscan.client import (
    MAX_BODY_BYTES,
    OnsMqttClient,
    check_endpoint,
    endpoint_for_region,
    make_ssl_context,
)
from fleetscan.credentials import Credentials, StaticCredentials
from fleetscan.errors import (
    AccountError,
    ApiError,
    ClientIdError,
    ResignError,
    ThrottledError,
    TimedOutError,
    TransientError,
    UsageError,
)
from fleetscan.signing import canonical_query, verify_v1, verify_v3

KEY_ID = "LTAI-test-key"
SECRET = "s3cret-Never-Shown"
TOKEN = "STS.token+with/odd=chars"
INSTANCE = "mqtt-cn-0pp12gl0000"
ONLINE = "GID_test@@@online"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    raw_query: str
    params: dict[str, str]
    headers: dict[str, str]
    verified: bool


class FakeApi:
    """Verifies like the real API, then answers from ``script`` or with success."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: list[Handler] = []
        self._nonces: set[str] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, _, raw_query = request.raw_path.partition("?")
        pairs = parse_qsl(raw_query, keep_blank_values=True)
        params = dict(pairs)
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.read()
        if "authorization" in headers:
            verified = verify_v3(request.method, path, pairs, headers, body, SECRET)
            nonce = headers.get("x-acs-signature-nonce", "")
        else:
            verified = verify_v1(request.method, params, SECRET)
            nonce = params.get("SignatureNonce", "")
        self.seen.append(Seen(request.method, raw_query, params, headers, verified))
        if not verified:
            return error_answer(400, "SignatureDoesNotMatch")
        if nonce in self._nonces:
            return error_answer(400, "SignatureNonceUsed")
        self._nonces.add(nonce)
        if self.script:
            return await self.script.pop(0)(request)
        if "ClientId" in params:
            return web.json_response(
                {"OnlineStatus": params["ClientId"] == ONLINE, "RequestId": "req-1"}
            )
        ids = [v for k, v in pairs if k.startswith("ClientIdList.")]
        statuses = [{"ClientId": c, "OnlineStatus": c == ONLINE} for c in ids]
        return web.json_response({"RequestId": "req-b", "OnlineStatusList": statuses})


def error_answer(status: int, code: str, **headers: str) -> web.Response:
    body = {"RequestId": "req-e", "HostId": "onsmqtt", "Code": code, "Message": f"{code}!"}
    return web.json_response(body, status=status, headers=headers)


def answer(status: int, body: bytes, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    return handler


@asynccontextmanager
async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(
    behave: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server that reads the request head, then does whatever ``behave`` does."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await behave(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    async with serve(fake.handle) as url:
        yield fake, url


def make_client(
    session: aiohttp.ClientSession,
    endpoint: str,
    *,
    signature: Any = "v3",
    token: str | None = None,
    **kwargs: Any,
) -> OnsMqttClient:
    credentials = Credentials(access_key_id=KEY_ID, access_key_secret=SECRET, security_token=token)
    return OnsMqttClient(
        session=session,
        credentials=StaticCredentials(credentials),
        instance_id=INSTANCE,
        endpoint=endpoint,
        signature=signature,
        **kwargs,
    )


# --- signing on the wire ----------------------------------------------------------------


@pytest.mark.parametrize("signature", ["v3", "v1"])
@pytest.mark.parametrize("token", [None, TOKEN])
async def test_signed_calls_verify(
    session: aiohttp.ClientSession,
    api: tuple[FakeApi, str],
    signature: str,
    token: str | None,
) -> None:
    fake, url = api
    client = make_client(session, url, signature=signature, token=token)
    assert (await client.query_session(ONLINE)).online is True
    answer = await client.query_session("GID_test@@@offline")
    assert (answer.online, answer.request_id) == (False, "req-1")
    batch = await client.batch_query_sessions([ONLINE, "GID_test@@@off"])
    assert batch.statuses == {ONLINE: True, "GID_test@@@off": False}
    assert batch.request_id == "req-b"
    assert [s.verified for s in fake.seen] == [True, True, True]
    for seen in fake.seen:
        assert seen.method == "POST"
        assert seen.params["InstanceId"] == INSTANCE
        if signature == "v3":
            assert seen.headers.get("x-acs-security-token") == token
            assert "x-acs-security-token" in seen.headers["authorization"] or token is None
        else:
            assert seen.params.get("SecurityToken") == token
            assert seen.params["Version"] == "2020-04-20"


ODD_IDS = ["GID_a@@@dev 1", "GID_a@@@x*y~z", "GID_a@@@café", "GID_a@@@设备+/=%&"]


@pytest.mark.parametrize("signature", ["v3", "v1"])
async def test_the_query_sent_is_the_canonical_string_signed(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str], signature: str
) -> None:
    fake, url = api
    client = make_client(session, url, signature=signature)
    for client_id in ODD_IDS:
        await client.query_session(client_id)
    await client.batch_query_sessions(ODD_IDS)
    assert all(s.verified for s in fake.seen)
    for seen, client_id in zip(fake.seen, ODD_IDS, strict=False):
        assert seen.params["ClientId"] == client_id
    for seen in fake.seen:
        # Exactly the canonical form on the wire: nothing re-encoded on the way.
        assert seen.raw_query == canonical_query(parse_qsl(seen.raw_query))
        assert "+" not in seen.raw_query
    first = fake.seen[0].raw_query
    assert "GID_a%40%40%40dev%201" in first
    assert "x%2Ay~z" in fake.seen[1].raw_query
    assert "caf%C3%A9" in fake.seen[2].raw_query
    batch = fake.seen[-1]
    assert [batch.params[f"ClientIdList.{i}"] for i in range(1, 5)] == ODD_IDS


async def test_random_ids_round_trip_in_batches(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str]
) -> None:
    fake, url = api
    client = make_client(session, url)
    rng = random.Random(7)
    alphabet = "aZ09-_.~ @*+/=%&?#!'()[]:;,\t\u00e9\u4e2d\U0001f600"
    ids = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))) for _ in range(60)]
    for start in range(0, len(ids), 10):
        chunk = list(dict.fromkeys(ids[start : start + 10]))
        answer = await client.batch_query_sessions(chunk)
        assert set(answer.statuses) == set(chunk)
        seen = fake.seen[-1]
        assert seen.verified
        assert seen.raw_query == canonical_query(parse_qsl(seen.raw_query))
        sent = [seen.params[f"ClientIdList.{i}"] for i in range(1, len(chunk) + 1)]
        assert sent == chunk


async def test_batch_size_is_checked(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str]
) -> None:
    client = make_client(session, api[1])
    with pytest.raises(ValueError, match="1 to 10"):
        await client.batch_query_sessions([])
    with pytest.raises(ValueError, match="1 to 10"):
        await client.batch_query_sessions([f"GID_a@@@{i}" for i in range(11)])
    assert api[0].seen == []


@pytest.mark.parametrize("signature", ["v3", "v1"])
async def test_every_call_signs_afresh(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str], signature: str
) -> None:
    fake, url = api
    now = [datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)]
    client = make_client(session, url, signature=signature, clock=lambda: now[0])
    await client.query_session(ONLINE)
    now[0] += timedelta(seconds=0.3)  # same second
    await client.query_session(ONLINE)
    now[0] += timedelta(seconds=1)
    await client.query_session(ONLINE)
    if signature == "v3":
        nonces = [s.headers["x-acs-signature-nonce"] for s in fake.seen]
        dates = [s.headers["x-acs-date"] for s in fake.seen]
    else:
        nonces = [s.params["SignatureNonce"] for s in fake.seen]
        dates = [s.params["Timestamp"] for s in fake.seen]
    assert len(set(nonces)) == 3
    assert dates == ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z", "2026-01-02T03:04:06Z"]


async def test_a_reused_nonce_is_a_resign_error(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str]
) -> None:
    client = make_client(session, api[1], nonce=lambda: "always-the-same")
    await client.query_session(ONLINE)
    with pytest.raises(ResignError) as caught:
        await client.query_session(ONLINE)
    assert caught.value.code == "SignatureNonceUsed"


async def test_credentials_are_fetched_for_every_attempt(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str]
) -> None:
    fake, url = api

    class Rotating:
        def __init__(self) -> None:
            self.calls = 0

        async def get(self) -> Credentials:
            self.calls += 1
            return Credentials(
                access_key_id=KEY_ID, access_key_secret=SECRET, security_token=f"t{self.calls}"
            )

    client = OnsMqttClient(
        session=session, credentials=Rotating(), instance_id=INSTANCE, endpoint=url
    )
    await client.query_session(ONLINE)
    await client.query_session(ONLINE)
    assert [s.headers["x-acs-security-token"] for s in fake.seen] == ["t1", "t2"]
    assert all(s.verified for s in fake.seen)


# --- error answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "SystemOverFlow", ThrottledError),
        (500, "SystemOverFlow", ThrottledError),
        (400, "Throttling.User", ThrottledError),
        (417, "InternalError", TransientError),
        (500, "InternalError", TransientError),
        (503, "ServiceUnavailable", TransientError),
        (400, "InvalidParameter.ClientId", ClientIdError),
        (400, "ParameterCheckFailed", ClientIdError),
        (400, "InstanceNotFound", AccountError),
        (400, "InstancePermissionCheckFailed", AccountError),
        (404, "InvalidAccessKeyId.NotFound", AccountError),
        (403, "Forbidden.RAM", AccountError),
        (404, "ApiNotSupport", AccountError),
        (400, "SignatureNonceUsed", ResignError),
        (400, "InvalidTimeStamp.Expired", ResignError),
    ],
)
async def test_error_codes_map_to_classes(
    session: aiohttp.ClientSession,
    api: tuple[FakeApi, str],
    status: int,
    code: str,
    cls: type[ApiError],
) -> None:
    fake, url = api
    client = make_client(session, url)

    async def refuse(request: web.Request) -> web.Response:
        return error_answer(status, code)

    for call in (
        lambda: client.query_session(ONLINE),
        lambda: client.batch_query_sessions([ONLINE]),
    ):
        fake.script.append(refuse)
        with pytest.raises(cls) as caught:
            await call()
        error = caught.value
        assert type(error) is cls
        assert (error.code, error.message, error.http_status) == (code, f"{code}!", status)
        assert error.request_id == "req-e"
        assert error.retry_after is None


@pytest.mark.parametrize(
    ("header", "seconds"), [("1500", 1.5), ("0", 0.0), ("soon", None), ("-5", None), ("nan", None)]
)
async def test_retry_after_header_in_milliseconds(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str], header: str, seconds: float | None
) -> None:
    fake, url = api

    async def throttle(request: web.Request) -> web.Response:
        return error_answer(403, "SystemOverFlow", **{"x-acs-retry-after": header})

    fake.script.append(throttle)
    with pytest.raises(ThrottledError) as caught:
        await make_client(session, url).query_session(ONLINE)
    assert caught.value.retry_after == seconds


# --- unreadable answers -------------------------------------------------------------------

HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (200, HTML, TransientError, "MalformedResponse"),
        (200, b"", TransientError, "MalformedResponse"),
        (200, b'{"OnlineStatus": tr', TransientError, "MalformedResponse"),
        (200, b"[true]", TransientError, "MalformedResponse"),
        (200, b'{"RequestId": "r"}', TransientError, "MalformedResponse"),
        (200, b'{"OnlineStatus": "true"}', TransientError, "MalformedResponse"),
        (200, b'{"OnlineStatus": 1}', TransientError, "MalformedResponse"),
        (200, b'{"OnlineStatus": null}', TransientError, "MalformedResponse"),
        (200, b"\xff\xfe\x00garbage", TransientError, "MalformedResponse"),
        (403, HTML, TransientError, "MalformedResponse"),
        (404, b"", TransientError, "MalformedResponse"),
        (400, b'{"Code": 42}', TransientError, "MalformedResponse"),
        (302, b"", TransientError, "MalformedResponse"),
        (502, HTML, TransientError, "HTTP502"),
        (504, b"", TransientError, "HTTP504"),
        (429, b"", ThrottledError, "HTTP429"),
        (200, b'{"Code": "Throttling.Api", "Message": "m"}', ThrottledError, "Throttling.Api"),
    ],
)
async def test_unreadable_answers_are_classified(
    session: aiohttp.ClientSession,
    api: tuple[FakeApi, str],
    status: int,
    body: bytes,
    cls: type[ApiError],
    code: str,
) -> None:
    fake, url = api
    fake.script.append(answer(status, body, **({"Location": "/x"} if status == 302 else {})))
    with pytest.raises(cls) as caught:
        await make_client(session, url).query_session(ONLINE)
    assert type(caught.value) is cls
    assert (caught.value.code, caught.value.http_status) == (code, status)


@pytest.mark.parametrize(
    "body",
    [
        b'{"RequestId": "r"}',
        b'{"OnlineStatusList": {"a": true}}',
        b'{"OnlineStatusList": [{"ClientId": "a"}]}',
        b'{"OnlineStatusList": [{"ClientId": 5, "OnlineStatus": true}]}',
        b'{"OnlineStatusList": ["a"]}',
    ],
)
async def test_malformed_batch_answers(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str], body: bytes
) -> None:
    fake, url = api
    fake.script.append(answer(200, body))
    with pytest.raises(TransientError) as caught:
        await make_client(session, url).batch_query_sessions(["a"])
    assert (caught.value.code, caught.value.http_status) == ("MalformedResponse", 200)


async def test_batch_answer_as_given(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str]
) -> None:
    fake, url = api
    fake.script.append(
        answer(200, b'{"OnlineStatusList": [{"ClientId": "a", "OnlineStatus": true}]}')
    )
    answer_ = await make_client(session, url).batch_query_sessions(["a", "b"])
    assert (answer_.statuses, answer_.request_id) == ({"a": True}, None)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_huge_body_is_not_read_whole(
    session: aiohttp.ClientSession, api: tuple[FakeApi, str], chunked: bool
) -> None:
    fake, url = api

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = 4 * MAX_BODY_BYTES
        await response.prepare(request)
        try:
            for _ in range(4 * 16):
                await response.write(b" " * (MAX_BODY_BYTES // 16))
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    fake.script.append(huge)
    with pytest.raises(TransientError) as caught:
        await make_client(session, url).query_session(ONLINE)
    assert (caught.value.code, caught.value.http_status) == ("MalformedResponse", 200)
    assert "larger than" in caught.value.message


# --- no answer ---------------------------------------------------------------------------


def test_a_slow_answer_times_out(virtual_loop: VirtualLoop) -> None:
    # On a virtual clock: the timeout fires at exactly its time, the answer (due at
    # 0.5 s) never comes first, and no real second passes.
    async def main() -> tuple[TimedOutError, float]:
        fake = FakeApi()

        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(0.5)
            return web.json_response({"OnlineStatus": True})

        fake.script.append(slow)
        async with aiohttp.ClientSession() as session, serve(fake.handle) as url:
            start = asyncio.get_running_loop().time()
            with pytest.raises(TimedOutError) as caught:
                await make_client(session, url, timeout=0.2).query_session(ONLINE)
            return caught.value, asyncio.get_running_loop().time() - start

    error, waited = virtual_loop.run(main)
    assert isinstance(error, TransientError)
    assert (error.code, error.http_status) == ("Timeout", None)
    assert 0.2 <= waited < 0.5


def test_a_body_that_stalls_times_out(virtual_loop: VirtualLoop) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"Online')
        await writer.drain()
        await asyncio.sleep(0.5)

    async def main() -> tuple[TimedOutError, float]:
        async with aiohttp.ClientSession() as session, raw_server(stall) as url:
            start = asyncio.get_running_loop().time()
            with pytest.raises(TimedOutError) as caught:
                await make_client(session, url, timeout=0.2).query_session(ONLINE)
            return caught.value, asyncio.get_running_loop().time() - start

    error, waited = virtual_loop.run(main)
    assert error.code == "Timeout"
    assert 0.2 <= waited < 0.5


async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Hang up without a word."""


async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n{"OnlineStatus": tr')
    await writer.drain()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SURPRISE\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize(
    ("behave", "code"),
    [(drop, "ConnectionError"), (cut_off, "ConnectionError"), (garbage, "MalformedResponse")],
)
async def test_broken_connections_are_transient(
    session: aiohttp.ClientSession,
    behave: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    code: str,
) -> None:
    async with raw_server(behave) as url:
        client = make_client(session, url, signature="v1", token=TOKEN)
        with pytest.raises(TransientError) as caught:
            await client.query_session(ONLINE)
    error = caught.value
    assert (error.code, error.http_status) == (code, None)
    # aiohttp's exception (whose text may hold the URL, and so V1's token) is dropped.
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert TOKEN not in str(error)
    assert SECRET not in str(error)


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    async with raw_server(drop) as url:
        pass  # now nothing listens there
    with pytest.raises(TransientError) as caught:
        await make_client(session, url).query_session(ONLINE)
    assert (caught.value.code, caught.value.http_status) == ("ConnectionError", None)


# --- endpoints and TLS -------------------------------------------------------------------


def test_endpoint_for_region() -> None:
    assert endpoint_for_region("cn-hangzhou") == "https://onsmqtt.cn-hangzhou.aliyuncs.com/"
    assert (
        endpoint_for_region("ap-southeast-1", vpc=True)
        == "https://onsmqtt-vpc.ap-southeast-1.aliyuncs.com/"
    )
    for bad in ("", "evil.com/x", "cn hangzhou", "CN-HANGZHOU", "-cn"):
        with pytest.raises(UsageError):
            endpoint_for_region(bad)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://onsmqtt.cn-hangzhou.aliyuncs.com/", "https://onsmqtt.cn-hangzhou.aliyuncs.com/"),
        ("https://onsmqtt.cn-hangzhou.aliyuncs.com", "https://onsmqtt.cn-hangzhou.aliyuncs.com/"),
        ("https://proxy.internal:8443", "https://proxy.internal:8443/"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://127.9.9.9/", "http://127.9.9.9/"),
        ("http://[::1]:9000/", "http://[::1]:9000/"),
        ("http://localhost:1/", "http://localhost:1/"),
        ("HTTP://LOCALHOST:1/", "http://localhost:1/"),
    ],
)
def test_check_endpoint_accepts(url: str, normalised: str) -> None:
    assert check_endpoint(url) == normalised


@pytest.mark.parametrize(
    "url",
    [
        "http://onsmqtt.cn-hangzhou.aliyuncs.com/",
        "http://10.0.0.1/",
        "http://128.0.0.1/",
        "http://localhost.example.com/",
        "http://[::2]/",
        "ftp://127.0.0.1/",
        "https://host/api/",
        "https://host/?x=1",
        "https://user:pw@host/",
        "onsmqtt.cn-hangzhou.aliyuncs.com",
        "",
    ],
)
def test_check_endpoint_refuses(url: str) -> None:
    with pytest.raises(UsageError):
        check_endpoint(url)


async def test_the_client_refuses_cleartext_to_a_remote_host(
    session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(UsageError, match="https"):
        make_client(session, "http://onsmqtt.cn-hangzhou.aliyuncs.com/")


async def test_tls_with_an_extra_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    fake = FakeApi()
    async with serve(fake.handle, server_context) as url:
        context = make_ssl_context(str(ca_file))
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s:
            assert (await make_client(s, url).query_session(ONLINE)).online
        # Without the extra CA the certificate is refused, as a TLSError that stops
        # the scan: it will not start verifying on a retry.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=make_ssl_context(None))
        ) as s:
            with pytest.raises(AccountError) as caught:
                await make_client(s, url).query_session(ONLINE)
    assert caught.value.code == "TLSError"
    assert fake.seen[0].verified
    assert len(fake.seen) == 1


def test_a_missing_ca_bundle_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CA bundle"):
        make_ssl_context(str(tmp_path / "nope.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(UsageError, match="CA bundle"):
        make_ssl_context(str(bad))


async def test_options_are_checked_and_secrets_not_shown(
    session: aiohttp.ClientSession,
) -> None:
    client = make_client(session, "http://127.0.0.1:1/", token=TOKEN)
    assert SECRET not in repr(client)
    assert TOKEN not in repr(client)
    with pytest.raises(UsageError, match="signature"):
        make_client(session, "http://127.0.0.1:1/", signature="v2")
    with pytest.raises(UsageError, match="timeout"):
        make_client(session, "http://127.0.0.1:1/", timeout=0)
