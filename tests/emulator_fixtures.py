"""Helpers for the emulator's tests: a fake clock and a small signing API caller.

The caller signs with `fleetscan.signing` exactly as a client would, V1 or V3, with
the parameters in the query string or a form body, so tests can also build the
malformed requests a real client must never send.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from fleetscan.emulator import (
    ACTION_BATCH,
    ACTION_SINGLE,
    API_VERSION,
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    RunningEmulator,
    run_emulator,
)
from fleetscan.signing import canonical_query, sign_v1, sign_v3

FORM = "application/x-www-form-urlencoded"
# A fixed start so failures repeat: 2025-06-15T15:06:40Z.
START = 1_750_000_000.0
_nonces = itertools.count()


class FakeClock:
    """Seconds since the epoch that move only when told."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepRecorder:
    """An injected sleep that records its delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def ids(n: int, prefix: str = "GID_test@@@dev") -> list[str]:
    """``n`` valid client IDs."""
    return [f"{prefix}{i}" for i in range(n)]


@dataclass
class Reply:
    """One HTTP answer: status, headers and the JSON body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        """The error ``Code``, or None for a success."""
        code = self.body.get("Code")
        return code if isinstance(code, str) else None


class Caller:
    """Signs and sends API calls to an emulator at ``url``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        secret: str = DEFAULT_ACCESS_KEY_SECRET,
        security_token: str | None = None,
        instance_id: str = DEFAULT_INSTANCE_ID,
    ) -> None:
        self.session = session
        self.url = url
        self.clock = clock
        self.access_key_id = access_key_id
        self.secret = secret
        self.security_token = security_token
        self.instance_id = instance_id
        parsed = URL(url)
        self.host = f"{parsed.host}:{parsed.port}"

    async def single(self, client_id: str, **kwargs: Any) -> Reply:
        """``QuerySessionByClientId`` for one ID."""
        params = {"InstanceId": self.instance_id, "ClientId": client_id}
        return await self.call(ACTION_SINGLE, params, **kwargs)

    async def batch(self, client_ids: Sequence[str], **kwargs: Any) -> Reply:
        """``BatchQuerySessionByClientIds`` for up to 10 IDs."""
        params = {"InstanceId": self.instance_id}
        params.update({f"ClientIdList.{i}": cid for i, cid in enumerate(client_ids, 1)})
        return await self.call(ACTION_BATCH, params, **kwargs)

    async def call(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        scheme: str = "v3",
        method: str = "POST",
        in_body: bool = False,
        version: str = API_VERSION,
        nonce: str | None = None,
        when: float | None = None,
        access_key_id: str | None = None,
        secret: str | None = None,
        security_token: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        sign_method: str | None = None,
    ) -> Reply:
        """Sign ``params`` with V1 or V3 and send them; returns the `Reply`."""
        url, headers, body = self.build(
            action,
            params,
            scheme=scheme,
            method=method,
            in_body=in_body,
            version=version,
            nonce=nonce,
            when=when,
            access_key_id=access_key_id,
            secret=secret,
            security_token=security_token,
            extra_headers=extra_headers,
            sign_method=sign_method,
        )
        return await self.send(method, url, headers, body)

    def build(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        scheme: str = "v3",
        method: str = "POST",
        in_body: bool = False,
        version: str = API_VERSION,
        nonce: str | None = None,
        when: float | None = None,
        access_key_id: str | None = None,
        secret: str | None = None,
        security_token: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        sign_method: str | None = None,
    ) -> tuple[str, dict[str, str], bytes | None]:
        """The URL, headers and body of a signed request (send it with `send`)."""
        timestamp = datetime.fromtimestamp(self.clock() if when is None else when, UTC)
        nonce = nonce or f"nonce-{next(_nonces)}-{time.monotonic_ns()}"
        key_id = access_key_id or self.access_key_id
        key_secret = secret or self.secret
        token = security_token or self.security_token
        headers: dict[str, str] = {}
        body: bytes | None = None
        if scheme == "v1":
            signed = sign_v1(
                sign_method or method,
                {"Action": action, "Version": version, **params},
                access_key_id=key_id,
                secret=key_secret,
                timestamp=timestamp,
                nonce=nonce,
                security_token=token,
            )
            if in_body:
                body = canonical_query(signed).encode()
                headers["Content-Type"] = FORM
                url = self.url
            else:
                url = f"{self.url}?{canonical_query(signed)}"
            headers.update(extra_headers or {})
            return url, headers, body
        extra = dict(extra_headers or {})
        query: Mapping[str, str] = params
        if in_body:
            body = canonical_query(params).encode()
            extra["content-type"] = FORM
            query = {}
        headers = sign_v3(
            sign_method or method,
            host=self.host,
            action=action,
            version=version,
            query=query,
            access_key_id=key_id,
            secret=key_secret,
            timestamp=timestamp,
            nonce=nonce,
            body=body or b"",
            security_token=token,
            extra_headers=extra,
        )
        url = f"{self.url}?{canonical_query(query)}" if query else self.url
        return url, headers, body

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Reply:
        """Send a built request as is."""
        async with self.session.request(
            method, URL(url, encoded=True), headers=dict(headers), data=body
        ) as response:
            raw = await response.read()
            return Reply(response.status, response.headers, orjson.loads(raw) if raw else {})


@asynccontextmanager
async def serving(
    config: EmulatorConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    **caller_args: Any,
) -> AsyncIterator[tuple[RunningEmulator, Caller]]:
    """An emulator on loopback (on a `FakeClock` unless given a clock) and a `Caller`."""
    clock = clock or FakeClock()
    async with (
        run_emulator(config, clock=clock, sleep=sleep or asyncio.sleep) as emu,
        aiohttp.ClientSession() as session,
    ):
        yield emu, Caller(session, emu.url, clock=clock, **caller_args)
