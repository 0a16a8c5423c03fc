"""Checks a request's credentials and signature, V1 or V3, as the service does.

Order: every signing part present (``IncompleteSignature``), the key exists and is
enabled (``InvalidAccessKeyId.NotFound``/``.Inactive``), the STS token (``Missing-
SecurityToken``, ``InvalidSecurityToken.*``), the signature (``SignatureDoesNotMatch``),
the timestamp within 15 minutes (``InvalidTimeStamp.*``), then the nonce unused for
15 minutes (``SignatureNonceUsed``). A refused request never uses up its nonce.
Verification itself is `fleetscan.signing`'s, shared with the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from fleetscan.emulator.answers import Refusal
from fleetscan.emulator.config import SIGNATURE_WINDOW_SECONDS, KeyPair
from fleetscan.emulator.control import EmulatorControl
from fleetscan.emulator.nonces import NonceStore
from fleetscan.signing import (
    canonical_query,
    parse_v3_authorization,
    v1_string_to_sign,
    v3_matches,
    verify_v1,
)

__all__ = [
    "V1_SIGNING_PARAMETERS",
    "V3_COMMON_HEADERS",
    "V3_REQUIRED_HEADERS",
    "Authenticator",
]

V1_SIGNING_PARAMETERS = (
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)
V3_REQUIRED_HEADERS = ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")
# The common request headers of V3: each one present must be in SignedHeaders.
V3_COMMON_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
    "x-acs-security-token",
)


class Authenticator:
    """Verifies signatures against the keys in `EmulatorControl`."""

    __slots__ = ("_control", "_nonces")

    def __init__(self, control: EmulatorControl) -> None:
        self._control = control
        self._nonces = NonceStore(SIGNATURE_WINDOW_SECONDS)

    def check_v1(self, method: str, params: Mapping[str, str], now: float) -> KeyPair:
        """The key that signed a V1 request, or raise `Refusal`."""
        missing = [p for p in V1_SIGNING_PARAMETERS if not params.get(p)]
        if missing:
            raise Refusal(
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards: "
                f"{', '.join(missing)} missing.",
            )
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise Refusal(
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards: "
                "SignatureMethod must be HMAC-SHA1 and SignatureVersion 1.0.",
            )
        key = self._key(params["AccessKeyId"], params.get("SecurityToken"), now)
        if not verify_v1(method, params, key.secret):
            raise Refusal(
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation. "
                f"server string to sign is:{v1_string_to_sign(method, params)}",
            )
        self._fresh(key, params["Timestamp"], params["SignatureNonce"], now)
        return key

    def check_v3(
        self,
        method: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> KeyPair:
        """The key that signed a V3 request, or raise `Refusal`.

        ``headers`` is looked up by lowercase name (aiohttp's are case-insensitive).
        """
        try:
            auth = parse_v3_authorization(headers.get("authorization", ""))
        except ValueError as exc:
            raise Refusal(
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards: {exc}.",
            ) from None
        missing = [h for h in V3_REQUIRED_HEADERS if not headers.get(h)]
        if missing:
            raise Refusal(
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards: "
                f"header {', '.join(missing)} missing.",
            )
        # "Every common request header but Authorization, when present, must be signed."
        signed = auth.signed_headers
        for name in V3_COMMON_HEADERS:
            if name not in signed and name in headers:
                raise Refusal(
                    "IncompleteSignature",
                    "The request signature does not conform to Aliyun standards: "
                    f"header {name} is not in SignedHeaders.",
                )
        key = self._key(auth.access_key_id, headers.get("x-acs-security-token"), now)
        if not v3_matches(auth, method, "/", canonical_query(query), headers, body, key.secret):
            raise Refusal("SignatureDoesNotMatch")
        self._fresh(key, headers["x-acs-date"], headers["x-acs-signature-nonce"], now)
        return key

    def _key(self, access_key_id: str, token: str | None, now: float) -> KeyPair:
        control = self._control
        key = control.key(access_key_id)
        if key is None:
            raise Refusal("InvalidAccessKeyId.NotFound")
        if control.is_disabled(access_key_id):
            raise Refusal("InvalidAccessKeyId.Inactive")
        if key.security_token is None:
            if token:
                raise Refusal("InvalidSecurityToken.MismatchWithAccessKey")
        elif not token:
            raise Refusal("MissingSecurityToken")
        elif token != key.security_token:
            raise Refusal("InvalidSecurityToken.MismatchWithAccessKey")
        elif key.expires_at is not None and now >= key.expires_at:
            raise Refusal("InvalidSecurityToken.Expired")
        return key

    def _fresh(self, key: KeyPair, timestamp: str, nonce: str, now: float) -> None:
        try:
            when = datetime.fromisoformat(timestamp)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None or "T" not in timestamp:
            raise Refusal(
                "InvalidTimeStamp.Format",
                f"Specified time stamp or date value is not well formatted: {timestamp!r}, "
                "expected YYYY-MM-DDThh:mm:ssZ.",
            )
        if abs(when.timestamp() - now) > SIGNATURE_WINDOW_SECONDS:
            raise Refusal("InvalidTimeStamp.Expired")
        if not self._nonces.use(f"{key.access_key_id}\n{nonce}", now):
            raise Refusal("SignatureNonceUsed")
