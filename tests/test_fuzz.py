"""Property tests over garbage (issue 5): whatever bytes come in, as input or as an
answer, the readers and the response parser give a value or fleetscan's own error,
never a crash, and never a secret in a message.

- Input: arbitrary bytes, and bytes built from the pieces that break readers (BOMs,
  CR/LF, quotes, commas, NUL, invalid UTF-8, long runs), through every format.
- Answers: arbitrary bodies, statuses and retry hints through the client's parser,
  and through the real client over loopback.
- Resume: arbitrary bytes as an earlier output file.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetscan.client import MAX_BODY_BYTES, OnsMqttClient
from fleetscan.client.answers import answer_data, parse_statuses, retry_after_seconds
from fleetscan.credentials import Credentials, StaticCredentials
from fleetscan.errors import ApiError, InputError
from fleetscan.inputs import MAX_LINE_BYTES, read_client_ids
from fleetscan.output import prepare_resume
from fleetscan.records import FINAL_STATUSES

SECRET = "SECRET-fuzz-canary-789"
TOKEN = "TOKEN+fuzz/canary=0"  # base64's own characters, which URLs percent-encode

E = TypeVar("E", bound=BaseException)
T = TypeVar("T")


def attempt(fn: Callable[[], T], expected: type[E]) -> tuple[T | None, E | None]:
    """``fn()``'s value, or the ``expected`` exception it raised (anything else fails)."""
    try:
        return fn(), None
    except expected as exc:
        return None, exc


# --- input readers ---------------------------------------------------------------------------

# The pieces that break line and CSV readers, mixed with arbitrary bytes.
PIECES = [
    b"\xef\xbb\xbf",
    b"\r\n",
    b"\n",
    b"\r",
    b'"',
    b'""',
    b",",
    b"\t",
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x80\xa8",
    b" ",
    b"client_id",
    b"ClientId",
    b"GID_fuzz@@@d1",
    b"GID_fuzz@@@d2",
    b"\x1f\x8b",
    b"x" * 1000,
]
nasty_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=8)), max_size=60).map(b"".join),
)
NAMES = ["ids.txt", "ids.csv", "ids.tsv", "ids.txt.gz", "ids.csv.gz", "no-suffix"]


def read_all(path: str, column: str | None) -> list[Any]:
    return list(read_client_ids([path], column=column))


@settings(max_examples=300, deadline=None)
@given(data=nasty_bytes, name=st.sampled_from(NAMES), column=st.sampled_from([None, "ClientId"]))
def test_any_file_yields_ids_or_an_input_error_naming_it(
    data: bytes, name: str, column: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        payload = gzip.compress(data) if name.endswith(".gz") and data[:1] != b"\x1f" else data
        with open(path, "wb") as f:
            f.write(payload)
        rows, error = attempt(lambda: read_all(path, column), InputError)
    if error is not None:
        assert error.source == path
        assert error.line is None or error.line >= 1
        assert str(error).startswith(path)
        return
    assert rows is not None
    lines = [row.line for row in rows]
    assert lines == sorted(lines)
    for row in rows:
        assert row.source == path
        assert row.line >= 1
        assert isinstance(row.client_id, str)
        assert row.client_id == row.client_id.strip()
        assert "\x00" not in row.client_id
        assert len(row.client_id.encode()) <= MAX_LINE_BYTES


@settings(max_examples=200, deadline=None)
@given(data=nasty_bytes, as_csv=st.booleans(), chunk=st.integers(1, 64))
def test_any_stdin_yields_ids_or_an_input_error_naming_it(
    data: bytes, as_csv: bool, chunk: int
) -> None:
    # A pipe hands over bytes in pieces; the reader must not care where they break.
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.left = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            piece, self.left = self.left[:chunk], self.left[chunk:]
            buffer[: len(piece)] = piece
            return len(piece)

    stdin = io.BufferedReader(Pipe())
    fmt: Any = "csv" if as_csv else "text"
    rows, error = attempt(
        lambda: list(read_client_ids(["-"], stdin=stdin, stdin_format=fmt)), InputError
    )
    if error is not None:
        assert error.source == "<stdin>"
        return
    whole = list(
        read_client_ids(["-"], stdin=io.BytesIO(data), stdin_format="csv" if as_csv else "text")
    )
    assert rows == whole


# --- the response parser ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
# Bodies shaped like answers, error answers and proxy pages, with the secrets mixed in.
answer_bodies = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {},
        optional={
            "OnlineStatus": json_values,
            "OnlineStatusList": json_values
            | st.lists(
                st.fixed_dictionaries(
                    {}, optional={"ClientId": json_values, "OnlineStatus": json_values}
                ),
                max_size=4,
            ),
            "RequestId": json_values,
            "Code": json_values | st.sampled_from(["SystemOverFlow", "InternalError", ""]),
            "Message": json_values | st.sampled_from([SECRET, f"quoted: {TOKEN} ..."]),
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.sampled_from(
        [
            b"<html>502 Bad Gateway</html>",
            f"<html>GET /?SecurityToken={TOKEN}</html>".encode(),
            b"/?SecurityToken=TOKEN%2Bfuzz%2Fcanary%3D0",
            b"TOKEN%252Bfuzz%252Fcanary%253D0 and token%2bfuzz%2fcanary%3d0",
            f'{{"Code": "SignatureDoesNotMatch", "Message": "sign: {SECRET}"}}'.encode(),
        ]
    ),
)
statuses = st.sampled_from([200, 200, 200, 400, 403, 404, 408, 417, 429, 500, 502, 503, 504])
hints = st.none() | st.text(max_size=12) | st.integers(-5, 10**12).map(str)
ENCODED = ("TOKEN%2Bfuzz%2Fcanary%3D0", "TOKEN%252Bfuzz%252Fcanary%253D0")


def _no_secret(text: str) -> None:
    lowered = text.lower()
    for secret in (SECRET, TOKEN, *ENCODED):
        assert secret.lower() not in lowered, text


@settings(max_examples=500, deadline=None)
@given(status=statuses, body=answer_bodies, hint=hints, single=st.booleans())
def test_any_answer_parses_or_is_an_api_error_without_secrets(
    status: int, body: bytes, hint: str | None, single: bool
) -> None:
    field = "OnlineStatus" if single else "OnlineStatusList"

    def parse() -> tuple[dict[str, Any], object]:
        data = answer_data(status, body, hint, field, secrets=(TOKEN, SECRET))
        return data, data["OnlineStatus"] if single else parse_statuses(data["OnlineStatusList"])

    parsed, error = attempt(parse, ApiError)
    if error is not None:
        assert isinstance(error.code, str)
        assert error.code
        assert isinstance(error.message, str)
        assert error.http_status == status
        retry_after = error.retry_after
        assert retry_after is None or (retry_after >= 0 and math.isfinite(retry_after))
        _no_secret(str(error))
        _no_secret(repr(error.to_record()))
        return
    assert parsed is not None
    data, value = parsed
    assert status == 200
    assert isinstance(data, dict)
    if not single:
        assert isinstance(value, dict)
        assert all(isinstance(k, str) and isinstance(v, bool) for k, v in value.items())


@given(hint=st.text(max_size=30))
def test_any_retry_hint_is_a_sane_number_of_seconds_or_none(hint: str) -> None:
    seconds = retry_after_seconds(hint)
    assert seconds is None or (seconds >= 0 and math.isfinite(seconds))


# --- the same, through the real client over loopback ------------------------------------------


class Script:
    """What the fake server answers next: status, body, extra headers."""

    status = 200
    body = b""
    headers: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated


async def _scripted(request: web.Request) -> web.Response:
    return web.Response(status=Script.status, body=Script.body, headers=Script.headers)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/", _scripted)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    urls: list[str] = []

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}/")
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(10)
    yield urls[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


async def _ask(url: str, single: bool) -> object:
    credentials = Credentials(
        access_key_id="LTAI-fuzz", access_key_secret=SECRET, security_token=TOKEN
    )
    async with aiohttp.ClientSession() as session:
        client = OnsMqttClient(
            session=session,
            credentials=StaticCredentials(credentials),
            instance_id="mqtt-cn-fuzz",
            endpoint=url,
            signature="v1",  # the token in the URL, where a server can quote it
            timeout=5,
        )
        if single:
            return await client.query_session("GID_fuzz@@@d1")
        return await client.batch_query_sessions(["GID_fuzz@@@d1", "GID_fuzz@@@d2"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=statuses,
    body=answer_bodies | st.just(b"x" * (MAX_BODY_BYTES + 1)),
    hint=st.none() | st.text(alphabet="0123456789.-e", max_size=8),
    single=st.booleans(),
)
def test_any_answer_over_the_wire_is_a_value_or_an_api_error(
    server: str, status: int, body: bytes, hint: str | None, single: bool
) -> None:
    Script.status, Script.body = status, body
    Script.headers = {} if hint is None else {"x-acs-retry-after": hint}
    _, error = attempt(lambda: asyncio.run(_ask(server, single)), ApiError)
    if error is not None:
        _no_secret(str(error))
        assert error.http_status in (status, None)


# --- an earlier output file, for --resume ------------------------------------------------------

record_lines = st.builds(
    lambda cid, status: orjson.dumps({"client_id": cid, "status": status}) + b"\n",
    st.sampled_from(["GID_fuzz@@@d1", "GID_fuzz@@@d2", "GID_fuzz@@@d3"]),
    st.sampled_from(["online", "offline", "invalid", "error", "unknown"]),
)
output_files = st.lists(st.one_of(record_lines, nasty_bytes), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=output_files)
def test_any_output_file_is_repaired_for_resume_or_refused_by_name(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.ndjson")
        with open(path, "wb") as f:
            f.write(data)
        state, error = attempt(lambda: prepare_resume(path), InputError)
        with open(path, "rb") as f:
            repaired = f.read()
    if error is not None:
        assert error.source == path
        assert repaired == data  # a refused file is left as it was
        return
    assert state is not None
    # What is left is whole records, each ID once, final ones only: safe to append to.
    records = [orjson.loads(line) for line in repaired.splitlines() if line.strip()]
    assert repaired == b"" or repaired.endswith(b"\n")
    ids = [r["client_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert all(r["status"] in FINAL_STATUSES for r in records)
    assert state.carried_over == len(records) == len(state.seen)
    assert not any(state.seen.add(cid) for cid in ids)  # each one already there
