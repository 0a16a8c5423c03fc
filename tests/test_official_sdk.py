"""The official SDK, an independent client, against the emulator.

``alibabacloud_onsmqtt20200420`` sends ``POST /`` with every parameter in the query
string. By default it signs V3 (ACS3-HMAC-SHA256) and signs *every* header it sends
(``accept``, ``user-agent``, ``host``, ``x-acs-*``); with ``signature_algorithm='v2'``
it signs V1 (HMAC-SHA1) over the query, with ``Format=json`` in lowercase. If the
emulator accepts both and refuses a wrong secret, its verification is the service's,
not a mirror of fleetscan's own signer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException, ThrottlingException
from alibabacloud_tea_openapi.models import Config
from emulator_fixtures import ids

from fleetscan.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_INSTANCE_ID,
    DEFAULT_KEY,
    EmulatorConfig,
    KeyPair,
    Limits,
    ThreadedEmulator,
    run_emulator_in_thread,
)

STS = KeyPair(access_key_id="STS.SDK", secret="sts-sdk-secret", security_token="sdk-token")
SIGNATURES = [pytest.param(None, id="v3-default"), pytest.param("v2", id="v1")]


@pytest.fixture(scope="module")
def emu() -> Iterator[ThreadedEmulator]:
    with run_emulator_in_thread(EmulatorConfig(keys=(DEFAULT_KEY, STS))) as running:
        yield running


def _client(
    emu: ThreadedEmulator,
    signature: str | None,
    *,
    key_id: str = DEFAULT_ACCESS_KEY_ID,
    secret: str = DEFAULT_ACCESS_KEY_SECRET,
    token: str | None = None,
) -> Client:
    config = Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        endpoint=f"127.0.0.1:{emu.port}",
        protocol="http",
        region_id="cn-hangzhou",
    )
    if signature is not None:
        config.signature_algorithm = signature
    return Client(config)


def _single(client: Client, client_id: str) -> bool:
    request = models.QuerySessionByClientIdRequest(
        instance_id=DEFAULT_INSTANCE_ID, client_id=client_id
    )
    online = client.query_session_by_client_id(request).body.online_status
    assert isinstance(online, bool)
    return online


@pytest.mark.parametrize("signature", SIGNATURES)
def test_single_queries_answer_the_fleet_status(
    emu: ThreadedEmulator, signature: str | None
) -> None:
    client = _client(emu, signature)
    answers = {cid: _single(client, cid) for cid in ids(8)}
    assert answers == {cid: emu.fleet.is_online(cid) for cid in ids(8)}
    assert set(answers.values()) == {True, False}


@pytest.mark.parametrize("signature", SIGNATURES)
def test_batch_queries_answer_the_fleet_status(
    emu: ThreadedEmulator, signature: str | None
) -> None:
    client = _client(emu, signature)
    request = models.BatchQuerySessionByClientIdsRequest(
        instance_id=DEFAULT_INSTANCE_ID, client_id_list=ids(10)
    )
    body = client.batch_query_session_by_client_ids(request).body
    assert body.request_id
    assert [(s.client_id, s.online_status) for s in body.online_status_list] == [
        (cid, emu.fleet.is_online(cid)) for cid in ids(10)
    ]


@pytest.mark.parametrize("signature", SIGNATURES)
def test_wrong_secret_is_signature_does_not_match(
    emu: ThreadedEmulator, signature: str | None
) -> None:
    client = _client(emu, signature, secret="not-the-secret")
    with pytest.raises(AlibabaCloudException) as caught:
        _single(client, "GID_test@@@dev1")
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400


@pytest.mark.parametrize("signature", SIGNATURES)
def test_sts_credentials(emu: ThreadedEmulator, signature: str | None) -> None:
    good = _client(emu, signature, key_id=STS.access_key_id, secret=STS.secret, token="sdk-token")
    assert _single(good, "GID_test@@@dev1") is emu.fleet.is_online("GID_test@@@dev1")
    bad = _client(emu, signature, key_id=STS.access_key_id, secret=STS.secret, token="other")
    with pytest.raises(AlibabaCloudException) as caught:
        _single(bad, "GID_test@@@dev1")
    assert caught.value.code == "InvalidSecurityToken.MismatchWithAccessKey"


def test_sdk_reads_the_retry_after_hint() -> None:
    config = EmulatorConfig(limits=Limits(qps_single=1, retry_after_ms=700))
    with run_emulator_in_thread(config) as emu:
        client = _client(emu, None)
        _single(client, "GID_test@@@dev1")
        with pytest.raises(ThrottlingException) as caught:
            _single(client, "GID_test@@@dev2")
    assert caught.value.code == "SystemOverFlow"
    assert caught.value.status_code == 403
    assert caught.value.retry_after == 700
