"""Alibaba Cloud request signatures, V1 (HMAC-SHA1) and V3 (ACS3-HMAC-SHA256).

Pure functions shared by the client, which signs, and the emulator, which verifies.
The clock and the nonce are arguments, so every result is reproducible. See
``onsmqtt-api.md`` section 3 for both schemes and their known answers.

Send exactly the string you signed: `canonical_query` is also the query string the
client puts on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "EMPTY_SHA256",
    "V3_ALGORITHM",
    "V3_SIGNED_HEADERS",
    "V3Authorization",
    "canonical_query",
    "format_timestamp",
    "parse_v3_authorization",
    "percent_encode",
    "sign_v1",
    "sign_v3",
    "v1_signature",
    "v1_string_to_sign",
    "v3_authorization",
    "v3_canonical_request",
    "v3_matches",
    "v3_request_signature",
    "v3_signature",
    "verify_v1",
    "verify_v3",
]

V3_ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Headers fleetscan signs in V3; a verifier accepts any set the Authorization names.
V3_SIGNED_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of UTF-8: only ``A-Z a-z 0-9 - _ . ~`` stay as they are."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """``enc(k)=enc(v)`` pairs sorted by encoded name (byte order), joined by ``&``."""
    items = params.items() if isinstance(params, Mapping) else params
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in items)
    return "&".join(f"{k}={v}" for k, v in pairs)


def format_timestamp(when: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC, the form both schemes sign."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- V1 -------------------------------------------------------------------------------


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&enc(canonical query)``, every parameter but ``Signature``."""
    query = canonical_query((k, v) for k, v in params.items() if k != "Signature")
    return f"{method.upper()}&%2F&{percent_encode(query)}"


def v1_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """base64(HMAC-SHA1(secret + "&", StringToSign))."""
    digest = hmac.new(
        (secret + "&").encode(), v1_string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def sign_v1(
    method: str,
    params: Mapping[str, str],
    *,
    access_key_id: str,
    secret: str,
    timestamp: datetime,
    nonce: str,
    security_token: str | None = None,
) -> dict[str, str]:
    """``params`` plus V1's common parameters and ``Signature``, ready to send.

    ``params`` holds ``Action``, ``Version`` and the operation's own parameters.
    """
    signed = {
        "Format": "JSON",
        **params,
        "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce,
        "Timestamp": format_timestamp(timestamp),
    }
    if security_token:
        signed["SecurityToken"] = security_token
    signed["Signature"] = v1_signature(method, signed, secret)
    return signed


def verify_v1(method: str, params: Mapping[str, str], secret: str) -> bool:
    """True when ``params["Signature"]`` is the V1 signature of the other parameters."""
    given = params.get("Signature", "")
    return hmac.compare_digest(given.encode(), v1_signature(method, params, secret).encode())


# --- V3 -------------------------------------------------------------------------------


def v3_canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    payload_hash: str,
) -> str:
    """The canonical request; ``headers`` keys must be lowercase, ``query`` canonical."""
    names = sorted(h.lower() for h in signed_headers)
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in names)
    return "\n".join(
        [method.upper(), path or "/", query, canonical_headers, ";".join(names), payload_hash]
    )


def v3_signature(canonical_request: str, secret: str) -> str:
    """hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\\n" + hex(sha256(canonical request))))."""
    hashed = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"{V3_ALGORITHM}\n{hashed}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def v3_request_signature(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    payload_hash: str,
    secret: str,
) -> str:
    """A request's V3 signature: what the signer sends and the verifier recomputes."""
    canonical = v3_canonical_request(method, path, query, headers, signed_headers, payload_hash)
    return v3_signature(canonical, secret)


def v3_authorization(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    *,
    access_key_id: str,
    secret: str,
) -> str:
    """The ``Authorization`` header value that signs a request: the one V3 signer.

    ``query`` is canonical (`canonical_query`), ``headers`` are keyed by lowercase
    name and hold ``x-acs-content-sha256``, ``signed_headers`` are sorted lowercase
    names. The client signs every call through this; `sign_v3` is a convenience over it.
    """
    signature = v3_request_signature(
        method, path, query, headers, signed_headers, headers["x-acs-content-sha256"], secret
    )
    return (
        f"{V3_ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={';'.join(signed_headers)},Signature={signature}"
    )


def sign_v3(
    method: str,
    *,
    host: str,
    action: str,
    version: str,
    query: Mapping[str, str],
    access_key_id: str,
    secret: str,
    timestamp: datetime,
    nonce: str,
    body: bytes = b"",
    security_token: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers of a V3-signed request, ``Authorization`` included.

    Send the query as ``canonical_query(query)``. ``extra_headers`` (e.g.
    ``content-type``) are signed too.
    """
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": format_timestamp(timestamp),
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256,
    }
    if security_token:
        headers["x-acs-security-token"] = security_token
    for name, value in (extra_headers or {}).items():
        headers[name.lower()] = value
    headers["authorization"] = v3_authorization(
        method,
        "/",
        canonical_query(query),
        headers,
        sorted(headers),
        access_key_id=access_key_id,
        secret=secret,
    )
    return headers


class V3Authorization:
    """The three parts of a V3 ``Authorization`` header."""

    __slots__ = ("access_key_id", "signature", "signed_headers")

    def __init__(self, access_key_id: str, signed_headers: tuple[str, ...], signature: str):
        self.access_key_id = access_key_id
        self.signed_headers = signed_headers
        self.signature = signature


def parse_v3_authorization(header: str) -> V3Authorization:
    """Split ``ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…``.

    Raises ValueError when a part is missing or the algorithm is not V3.
    """
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != V3_ALGORITHM:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, value = item.strip().partition("=")
        if eq:
            parts[name] = value
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if not parts.get(p)]
    if missing:
        raise ValueError(f"Authorization lacks {', '.join(missing)}")
    names = tuple(n.strip().lower() for n in parts["SignedHeaders"].split(";") if n.strip())
    return V3Authorization(parts["Credential"], names, parts["Signature"])


def v3_matches(
    auth: V3Authorization,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
) -> bool:
    """True when ``auth`` (parsed from the request) signs it with ``secret``: the one
    V3 check, shared by `verify_v3` and the emulator.

    ``query`` is the canonical query of the decoded parameters; ``headers`` is looked
    up by lowercase name. The payload hash header must match the body received.
    """
    payload_hash = headers.get("x-acs-content-sha256", "")
    if payload_hash != hashlib.sha256(body).hexdigest():
        return False
    expected = v3_request_signature(
        method, path, query, headers, auth.signed_headers, payload_hash, secret
    )
    return hmac.compare_digest(auth.signature.encode(), expected.encode())


def verify_v3(
    method: str,
    path: str,
    query: Mapping[str, str] | Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
) -> bool:
    """True when the request's ``Authorization`` signs it with ``secret``.

    ``query`` holds the decoded parameters; ``headers`` is looked up by lowercase name.
    The payload hash header must also match the body actually received.
    """
    auth = parse_v3_authorization(headers.get("authorization", ""))
    return v3_matches(auth, method, path, canonical_query(query), headers, body, secret)
