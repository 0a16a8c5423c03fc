"""Signature checks: keys, STS tokens, V1 and V3 signatures, timestamps and nonces."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

import pytest
from emulator_fixtures import FakeClock, serving

from fleetscan.emulator import (
    ACTION_SINGLE,
    DEFAULT_INSTANCE_ID,
    DEFAULT_KEY,
    EmulatorConfig,
    KeyPair,
)
from fleetscan.emulator.nonces import NonceStore
from fleetscan.signing import (
    EMPTY_SHA256,
    canonical_query,
    parse_v3_authorization,
    v1_signature,
    v3_canonical_request,
    v3_signature,
)

CID = "GID_test@@@dev1"
SCHEMES = ["v1", "v3"]
OTHER = KeyPair(access_key_id="OTHER_KEY", secret="other-secret", account="acct-2")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_unknown_key_is_not_found(scheme: str) -> None:
    async with serving() as (_, caller):
        reply = await caller.single(CID, scheme=scheme, access_key_id="NO_SUCH_KEY")
    assert (reply.status, reply.code) == (404, "InvalidAccessKeyId.NotFound")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_wrong_secret_does_not_match(scheme: str) -> None:
    async with serving() as (_, caller):
        reply = await caller.single(CID, scheme=scheme, secret="not-the-secret")
    assert (reply.status, reply.code) == (400, "SignatureDoesNotMatch")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_several_key_pairs_are_accepted(scheme: str) -> None:
    async with serving(EmulatorConfig(keys=(DEFAULT_KEY, OTHER))) as (_, caller):
        first = await caller.single(CID, scheme=scheme)
        second = await caller.single(
            CID, scheme=scheme, access_key_id=OTHER.access_key_id, secret=OTHER.secret
        )
        crossed = await caller.single(
            CID, scheme=scheme, access_key_id=OTHER.access_key_id, secret=DEFAULT_KEY.secret
        )
    assert (first.status, second.status) == (200, 200)
    assert crossed.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_signature_covers_the_method(scheme: str) -> None:
    async with serving() as (_, caller):
        reply = await caller.single(CID, scheme=scheme, method="POST", sign_method="GET")
        get = await caller.single(CID, scheme=scheme, method="GET", sign_method="GET")
    assert reply.code == "SignatureDoesNotMatch"
    assert get.status == 200


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_signature_covers_every_parameter(scheme: str) -> None:
    async with serving() as (_, caller):
        url, headers, body = caller.build(
            ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID}, scheme=scheme
        )
        reply = await caller.send("POST", url.replace("dev1", "dev2"), headers, body)
    assert reply.code == "SignatureDoesNotMatch"


async def test_v1_mismatch_tells_the_server_string_to_sign() -> None:
    async with serving() as (_, caller):
        reply = await caller.single(CID, scheme="v1", secret="wrong")
    assert "server string to sign is:POST&%2F&AccessKeyId%3D" in reply.body["Message"]
    assert "wrong" not in reply.body["Message"]


async def test_v3_form_body_is_covered_by_the_payload_hash() -> None:
    params = {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID}
    async with serving() as (_, caller):
        url, headers, body = caller.build(ACTION_SINGLE, params, in_body=True)
        assert body is not None
        tampered = await caller.send("POST", url, headers, body.replace(b"dev1", b"dev2"))
        # A body hash that matches the tampered body still breaks the signature.
        headers["x-acs-content-sha256"] = hashlib.sha256(body.replace(b"1", b"2")).hexdigest()
        rehashed = await caller.send("POST", url, headers, body.replace(b"1", b"2"))
        fine = await caller.call(ACTION_SINGLE, params, in_body=True)
    assert tampered.code == "SignatureDoesNotMatch"
    assert rehashed.code == "SignatureDoesNotMatch"
    assert fine.status == 200


async def test_v3_accepts_any_signed_header_set() -> None:
    extra = {"user-agent": "AlibabaCloud (Linux) Python/3.11", "accept": "application/json"}
    async with serving() as (_, caller):
        reply = await caller.single(
            CID, extra_headers={**extra, "x-acs-credentials-provider": "static_ak"}
        )
    assert reply.status == 200, reply.body


async def test_v3_unsigned_common_header_is_incomplete() -> None:
    async with serving() as (_, caller):
        url, headers, body = caller.build(
            ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID}
        )
        auth = headers["authorization"]
        headers["authorization"] = auth.replace("x-acs-signature-nonce;", "")
        reply = await caller.send("POST", url, headers, body)
    assert (reply.status, reply.code) == (400, "IncompleteSignature")
    assert "x-acs-signature-nonce" in reply.body["Message"]


@pytest.mark.parametrize(
    "authorization",
    [
        "ACS3-HMAC-SHA256 Credential=FLEETSCAN_DEMO_KEY,SignedHeaders=host",
        "ACS3-HMAC-SM3 Credential=FLEETSCAN_DEMO_KEY,SignedHeaders=host,Signature=ab",
        "",
    ],
)
async def test_v3_malformed_authorization_is_incomplete(authorization: str) -> None:
    async with serving() as (_, caller):
        url, headers, body = caller.build(
            ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID}
        )
        headers["authorization"] = authorization
        reply = await caller.send("POST", url, headers, body)
    assert reply.code == "IncompleteSignature"


@pytest.mark.parametrize("dropped", ["Signature", "SignatureNonce", "Timestamp", "AccessKeyId"])
async def test_v1_missing_signing_parameter_is_incomplete(dropped: str) -> None:
    async with serving() as (_, caller):
        url, headers, body = caller.build(
            ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID}, scheme="v1"
        )
        base, _, query = url.partition("?")
        kept = "&".join(p for p in query.split("&") if not p.startswith(f"{dropped}="))
        reply = await caller.send("POST", f"{base}?{kept}", headers, body)
    assert (reply.status, reply.code) == (400, "IncompleteSignature")
    assert dropped in reply.body["Message"]


# --- timestamps and nonces ------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("skew", "ok"), [(-14 * 60, True), (14 * 60, True), (-16 * 60, False), (16 * 60, False)]
)
async def test_timestamps_more_than_15_minutes_off_are_expired(
    scheme: str, skew: float, ok: bool
) -> None:
    clock = FakeClock()
    async with serving(clock=clock) as (_, caller):
        reply = await caller.single(CID, scheme=scheme, when=clock.now + skew)
    if ok:
        assert reply.status == 200, reply.body
    else:
        assert (reply.status, reply.code) == (400, "InvalidTimeStamp.Expired")


@pytest.mark.parametrize("bad", ["yesterday", "2025-06-15 15:06:40", "2025-06-15T15:06:40"])
async def test_badly_formatted_timestamp(bad: str) -> None:
    params = {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID}
    async with serving() as (_, caller):
        url, _, _ = caller.build(ACTION_SINGLE, params, scheme="v1")
        signed = dict(parse_qsl(url.partition("?")[2]))
        signed["Timestamp"] = bad
        signed["Signature"] = v1_signature("POST", signed, DEFAULT_KEY.secret)
        v1 = await caller.send("POST", f"{caller.url}?{canonical_query(signed)}", {}, None)

        url, headers, body = caller.build(ACTION_SINGLE, params)
        headers["x-acs-date"] = bad
        auth = parse_v3_authorization(headers["authorization"])
        canonical = v3_canonical_request(
            "POST", "/", canonical_query(params), headers, auth.signed_headers, EMPTY_SHA256
        )
        signature = v3_signature(canonical, DEFAULT_KEY.secret)
        headers["authorization"] = headers["authorization"].replace(auth.signature, signature)
        v3 = await caller.send("POST", url, headers, body)
    assert (v1.status, v1.code) == (400, "InvalidTimeStamp.Format")
    assert (v3.status, v3.code) == (400, "InvalidTimeStamp.Format")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_nonce_reuse_within_15_minutes(scheme: str) -> None:
    clock = FakeClock()
    async with serving(clock=clock) as (_, caller):
        first = await caller.single(CID, scheme=scheme, nonce="n-1")
        clock.advance(14 * 60)
        again = await caller.single(CID, scheme=scheme, nonce="n-1")
        clock.advance(61 + 1)
        later = await caller.single(CID, scheme=scheme, nonce="n-1")
    assert first.status == 200
    assert (again.status, again.code) == (400, "SignatureNonceUsed")
    assert later.status == 200


async def test_resending_the_same_signed_request_is_refused() -> None:
    async with serving() as (_, caller):
        built = caller.build(ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": CID})
        first = await caller.send("POST", *built)
        second = await caller.send("POST", *built)
    assert (first.status, second.code) == (200, "SignatureNonceUsed")


async def test_a_refused_request_does_not_use_up_its_nonce() -> None:
    async with serving() as (_, caller):
        bad = await caller.single(CID, nonce="n-2", secret="wrong")
        good = await caller.single(CID, nonce="n-2")
    assert (bad.code, good.status) == ("SignatureDoesNotMatch", 200)


def test_nonce_store_forgets_after_15_minutes_in_bounded_memory() -> None:
    store = NonceStore(900)
    t = 0.0
    for i in range(20_000):  # 20 per second for 1,000 s
        t = i / 20
        assert store.use(f"n{i}", t)
        # Only the last 15 minutes (plus the current second) are remembered.
        assert len(store) <= 20 * 901
    assert not store.use("n19999", t)
    assert not store.use("n2001", t)  # used at 100.05 s: 899.9 s ago, still remembered
    assert store.use("n0", t)  # forgotten long ago
    assert len(store) <= 20 * 901 + 1


# --- STS and key changes while running ------------------------------------------------

STS = KeyPair(
    access_key_id="STS.TEMP", secret="sts-secret", security_token="tok-123", expires_at=None
)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_sts_key_requires_its_token(scheme: str) -> None:
    config = EmulatorConfig(keys=(DEFAULT_KEY, STS))
    async with serving(config, access_key_id="STS.TEMP", secret="sts-secret") as (_, caller):
        missing = await caller.single(CID, scheme=scheme)
        wrong = await caller.single(CID, scheme=scheme, security_token="tok-999")
        right = await caller.single(CID, scheme=scheme, security_token="tok-123")
        # A long-term key with a token is refused too.
        stray = await caller.single(
            CID,
            scheme=scheme,
            access_key_id=DEFAULT_KEY.access_key_id,
            secret=DEFAULT_KEY.secret,
            security_token="tok-123",
        )
    assert (missing.status, missing.code) == (400, "MissingSecurityToken")
    assert wrong.code == "InvalidSecurityToken.MismatchWithAccessKey"
    assert right.status == 200, right.body
    assert stray.code == "InvalidSecurityToken.MismatchWithAccessKey"


async def test_sts_token_expires() -> None:
    clock = FakeClock()
    sts = KeyPair(access_key_id="STS.T", secret="s", security_token="t", expires_at=clock.now + 60)
    config = EmulatorConfig(keys=(sts,))
    async with serving(config, clock=clock, access_key_id="STS.T", secret="s") as (_, caller):
        before = await caller.single(CID, security_token="t")
        clock.advance(60)
        after = await caller.single(CID, security_token="t")
    assert before.status == 200
    assert after.code == "InvalidSecurityToken.Expired"


async def test_revoking_and_removing_a_key_mid_run() -> None:
    async with serving(EmulatorConfig(keys=(DEFAULT_KEY, OTHER))) as (emu, caller):
        assert (await caller.single(CID)).status == 200
        emu.control.revoke_key(DEFAULT_KEY.access_key_id)
        revoked = await caller.single(CID)
        other = await caller.single(CID, access_key_id=OTHER.access_key_id, secret=OTHER.secret)
        emu.control.remove_key(DEFAULT_KEY.access_key_id)
        removed = await caller.single(CID)
        emu.control.add_key(DEFAULT_KEY)
        restored = await caller.single(CID)
    assert (revoked.status, revoked.code) == (400, "InvalidAccessKeyId.Inactive")
    assert other.status == 200
    assert (removed.status, removed.code) == (404, "InvalidAccessKeyId.NotFound")
    assert restored.status == 200


async def test_keys_change_through_the_config_endpoint() -> None:
    async with serving() as (_, caller):
        session = caller.session
        async with session.post(
            f"{caller.url}_emulator/config",
            json={"add_keys": [{"access_key_id": "NEW", "secret": "new-secret"}]},
        ) as response:
            settings = await response.json()
        added = await caller.single(CID, access_key_id="NEW", secret="new-secret")
        async with session.post(
            f"{caller.url}_emulator/config", json={"revoke_keys": ["NEW"]}
        ) as response:
            assert response.status == 200
        revoked = await caller.single(CID, access_key_id="NEW", secret="new-secret")
    assert "NEW" in settings["keys"]
    assert "new-secret" not in str(settings)
    assert added.status == 200
    assert revoked.code == "InvalidAccessKeyId.Inactive"


def test_key_repr_hides_secret_and_token() -> None:
    shown = repr(STS)
    assert "sts-secret" not in shown
    assert "tok-123" not in shown
    assert "STS.TEMP" in shown
