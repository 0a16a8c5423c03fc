"""How the client signs one attempt: a V3 and a V1 signer with one interface.

Each signs afresh (the clock's time, a new nonce). The client hands over the query
it built (canonical, already encoded) and the decoded parameters; the signer gives
back the query to send and the headers. The signatures themselves are
`fleetscan.signing`'s, which the emulator's verifier shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from fleetscan.credentials import Credentials
from fleetscan.limits import API_VERSION
from fleetscan.signing import (
    EMPTY_SHA256,
    V3_SIGNED_HEADERS,
    canonical_query,
    format_timestamp,
    sign_v1,
    v3_authorization,
)

__all__ = ["Signer", "V1Signer", "V3Signer"]

# V3 headers fleetscan signs, sorted; with an STS token, that header too.
_V3_NAMES: tuple[str, ...] = V3_SIGNED_HEADERS
_V3_NAMES_STS = tuple(sorted((*_V3_NAMES, "x-acs-security-token")))


class Signer(Protocol):
    """Signs one POST / attempt of ``action``."""

    def sign(
        self, action: str, query: str, params: Mapping[str, str], credentials: Credentials
    ) -> tuple[str, dict[str, str]]:
        """The query string to send (exactly as signed) and the request headers.

        ``query`` is the canonical query of ``params`` (the operation's parameters,
        InstanceId included); a signer may send it as is or build its own.
        """
        ...


class V3Signer:
    """ACS3-HMAC-SHA256: the parameters stay in the query, the signature in headers."""

    __slots__ = ("_clock", "_host", "_nonce", "_ts_second", "_ts_text")

    def __init__(
        self, *, host: str, clock: Callable[[], datetime], nonce: Callable[[], str]
    ) -> None:
        # The Host header we send, which V3 signs.
        self._host = host
        self._clock = clock
        self._nonce = nonce
        # The formatted timestamp, reused within its second.
        self._ts_second = -1
        self._ts_text = ""

    def sign(
        self, action: str, query: str, params: Mapping[str, str], credentials: Credentials
    ) -> tuple[str, dict[str, str]]:
        headers = {
            "host": self._host,
            "x-acs-action": action,
            "x-acs-content-sha256": EMPTY_SHA256,
            "x-acs-date": self._timestamp(),
            "x-acs-signature-nonce": self._nonce(),
            "x-acs-version": API_VERSION,
        }
        names = _V3_NAMES
        if credentials.security_token:
            headers["x-acs-security-token"] = credentials.security_token
            names = _V3_NAMES_STS
        headers["authorization"] = v3_authorization(
            "POST",
            "/",
            query,
            headers,
            names,
            access_key_id=credentials.access_key_id,
            secret=credentials.access_key_secret,
        )
        return query, headers

    def _timestamp(self) -> str:
        now = self._clock()
        second = int(now.timestamp())
        if second != self._ts_second:
            self._ts_second, self._ts_text = second, format_timestamp(now)
        return self._ts_text


class V1Signer:
    """HMAC-SHA1: the signature and the common parameters join the query; no headers."""

    __slots__ = ("_clock", "_nonce")

    def __init__(self, *, clock: Callable[[], datetime], nonce: Callable[[], str]) -> None:
        self._clock = clock
        self._nonce = nonce

    def sign(
        self, action: str, query: str, params: Mapping[str, str], credentials: Credentials
    ) -> tuple[str, dict[str, str]]:
        signed = sign_v1(
            "POST",
            {"Action": action, "Version": API_VERSION, **params},
            access_key_id=credentials.access_key_id,
            secret=credentials.access_key_secret,
            timestamp=self._clock(),
            nonce=self._nonce(),
            security_token=credentials.security_token,
        )
        return canonical_query(signed), {}
