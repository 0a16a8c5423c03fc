"""Signing: every known answer of onsmqtt-api.md section 3, and properties of both schemes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetscan.client import V1Signer, V3Signer
from fleetscan.credentials import Credentials
from fleetscan.signing import (
    EMPTY_SHA256,
    canonical_query,
    parse_v3_authorization,
    percent_encode,
    sign_v1,
    sign_v3,
    v1_signature,
    v1_string_to_sign,
    v3_canonical_request,
    v3_signature,
    verify_v1,
    verify_v3,
)

NONCE_V1 = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
TS_V1 = datetime(2016, 2, 23, 12, 46, 24, tzinfo=UTC)
NONCE_V3 = "3156853299f313e23d1673dc12e1703d"
TS_V3 = datetime(2023, 10, 26, 10, 22, 32, tzinfo=UTC)
ONSMQTT_PARAMS = {
    "Action": "QuerySessionByClientId",
    "Version": "2020-04-20",
    "ClientId": "GID_test@@@dev 1",
    "InstanceId": "post-cn-0pp12gl0000",
}


def test_v1_alibaba_published_example() -> None:
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": NONCE_V1,
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert v1_signature("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_v1_sdk_unit_test_vector() -> None:
    params = {"query": "test", "body": "test"}
    assert v1_string_to_sign("GET", params) == "GET&%2F&body%3Dtest%26query%3Dtest"
    assert v1_signature("GET", params, "secret") == "XlUyV4sXjOuX5FnjUz9IF9tm5rU="


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", "lLcStuOoWGrZCBN9fki5lXAzPgo="), ("POST", "t4+s7oWZid19QlCwpmXTFpmIFWQ=")],
)
def test_v1_onsmqtt_vector(method: str, expected: str) -> None:
    signed = sign_v1(
        method,
        ONSMQTT_PARAMS,
        access_key_id="testid",
        secret="testsecret",
        timestamp=TS_V1,
        nonce=NONCE_V1,
    )
    assert signed["Signature"] == expected
    assert verify_v1(method, signed, "testsecret")
    assert not verify_v1(method, signed, "wrong")
    other = "POST" if method == "GET" else "GET"
    assert not verify_v1(other, signed, "testsecret")


def test_v3_alibaba_published_example() -> None:
    headers = {
        "host": "ecs.cn-shanghai.aliyuncs.com",
        "x-acs-action": "RunInstances",
        "x-acs-version": "2014-05-26",
        "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": NONCE_V3,
        "x-acs-content-sha256": EMPTY_SHA256,
    }
    query = canonical_query(
        {
            "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            "RegionId": "cn-shanghai",
        }
    )
    canonical = v3_canonical_request("POST", "/", query, headers, headers, EMPTY_SHA256)
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )
    assert (
        v3_signature(canonical, "YourAccessKeySecret")
        == "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


def _sign_onsmqtt_v3(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "host": "onsmqtt.cn-hangzhou.aliyuncs.com",
        "action": "QuerySessionByClientId",
        "version": "2020-04-20",
        "query": {"ClientId": "GID_test@@@dev 1", "InstanceId": "post-cn-0pp12gl0000"},
        "access_key_id": "YourAccessKeyId",
        "secret": "YourAccessKeySecret",
        "timestamp": TS_V3,
        "nonce": NONCE_V3,
    }
    args.update(overrides)
    return sign_v3("POST", **args)  # type: ignore[arg-type]


def test_v3_onsmqtt_vector() -> None:
    headers = _sign_onsmqtt_v3()
    auth = parse_v3_authorization(headers["authorization"])
    assert auth.access_key_id == "YourAccessKeyId"
    assert auth.signature == "69bb52ca6339786ff222bc55c70a757ad9d504fd8eb51ba169bb38a4c19fb316"
    query = {"ClientId": "GID_test@@@dev 1", "InstanceId": "post-cn-0pp12gl0000"}
    assert verify_v3("POST", "/", query, headers, b"", "YourAccessKeySecret")
    assert not verify_v3("POST", "/", query, headers, b"", "wrong")
    assert not verify_v3("GET", "/", query, headers, b"", "YourAccessKeySecret")


def test_the_clients_v3_signer_gives_the_onsmqtt_vector() -> None:
    # The signer the client calls on every attempt, not only sign_v3, meets the vector.
    params = {"ClientId": "GID_test@@@dev 1", "InstanceId": "post-cn-0pp12gl0000"}
    signer = V3Signer(
        host="onsmqtt.cn-hangzhou.aliyuncs.com", clock=lambda: TS_V3, nonce=lambda: NONCE_V3
    )
    credentials = Credentials(
        access_key_id="YourAccessKeyId", access_key_secret="YourAccessKeySecret", source="test"
    )
    query, headers = signer.sign(
        "QuerySessionByClientId", canonical_query(params), params, credentials
    )
    assert query == canonical_query(params)
    assert headers == _sign_onsmqtt_v3()
    auth = parse_v3_authorization(headers["authorization"])
    assert auth.signature == "69bb52ca6339786ff222bc55c70a757ad9d504fd8eb51ba169bb38a4c19fb316"


def test_the_clients_v1_signer_gives_the_onsmqtt_vector() -> None:
    params = {k: v for k, v in ONSMQTT_PARAMS.items() if k not in ("Action", "Version")}
    signer = V1Signer(clock=lambda: TS_V1, nonce=lambda: NONCE_V1)
    credentials = Credentials(access_key_id="testid", access_key_secret="testsecret", source="t")
    query, headers = signer.sign("QuerySessionByClientId", "", params, credentials)
    assert headers == {}
    signed = dict(pair.split("=", 1) for pair in query.split("&"))
    assert signed["Signature"] == percent_encode("t4+s7oWZid19QlCwpmXTFpmIFWQ=")


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [(" ", "%20"), ("*", "%2A"), ("~", "~"), ("@", "%40"), ("é", "%C3%A9"), ("+", "%2B")],
)
def test_percent_encoding(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded
    assert percent_encode(f"a{raw}b") == f"a{encoded}b"


@given(st.text())
def test_percent_encoding_leaves_only_unreserved(value: str) -> None:
    encoded = percent_encode(value)
    stripped = encoded.replace("%", "")
    assert all(c.isascii() and (c.isalnum() or c in "-_.~") for c in stripped)


_params = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=16), max_size=5)


@given(_params, st.text(min_size=1, max_size=16), st.text(min_size=1, max_size=16))
def test_v1_any_change_to_a_signed_part_changes_the_signature(
    params: dict[str, str], key: str, value: str
) -> None:
    params = {**params, "Action": "QuerySessionByClientId"}
    base = v1_signature("GET", params, "secret")
    changed = {**params, key: value}
    if changed != params:
        assert v1_signature("GET", changed, "secret") != base
    assert v1_signature("POST", params, "secret") != base
    assert v1_signature("GET", params, "secret2") != base


@given(st.text(min_size=1, max_size=32), st.text(min_size=1, max_size=32))
def test_v3_any_change_to_a_signed_part_changes_the_signature(client_id: str, other: str) -> None:
    base = _sign_onsmqtt_v3(query={"ClientId": client_id})["authorization"]
    if other != client_id:
        assert _sign_onsmqtt_v3(query={"ClientId": other})["authorization"] != base
    assert _sign_onsmqtt_v3(query={"ClientId": client_id}, nonce="n2")["authorization"] != base
    assert _sign_onsmqtt_v3(query={"ClientId": client_id}, body=b"x")["authorization"] != base
    token = _sign_onsmqtt_v3(query={"ClientId": client_id}, security_token="t")
    assert token["authorization"] != base
    assert "x-acs-security-token" in parse_v3_authorization(token["authorization"]).signed_headers


def test_v3_verifies_extra_signed_headers_and_rejects_a_changed_one() -> None:
    query = {"ClientId": "GID_a@@@b"}
    headers = _sign_onsmqtt_v3(query=query, extra_headers={"User-Agent": "sdk/1", "Accept": "*"})
    assert "user-agent" in parse_v3_authorization(headers["authorization"]).signed_headers
    assert verify_v3("POST", "/", query, headers, b"", "YourAccessKeySecret")
    assert not verify_v3(
        "POST", "/", query, {**headers, "user-agent": "sdk/2"}, b"", "YourAccessKeySecret"
    )


def test_v3_payload_hash_must_match_the_body() -> None:
    query = {"ClientId": "GID_a@@@b"}
    headers = _sign_onsmqtt_v3(query=query, body=b"InstanceId=x")
    assert verify_v3("POST", "/", query, headers, b"InstanceId=x", "YourAccessKeySecret")
    assert not verify_v3("POST", "/", query, headers, b"InstanceId=y", "YourAccessKeySecret")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "HMAC-SHA1 Credential=a,SignedHeaders=host,Signature=x",
        "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
        "ACS3-HMAC-SHA256 SignedHeaders=host,Signature=x",
    ],
)
def test_malformed_authorization_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_v3_authorization(header)
