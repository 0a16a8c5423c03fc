"""The emulator's API surface: both actions over V1 and V3, GET and POST, query and
form body; exact success bodies; and each request-level error code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from emulator_fixtures import FakeClock, ids, serving

from fleetscan.emulator import (
    ACTION_BATCH,
    ACTION_SINGLE,
    DEFAULT_INSTANCE_ID,
    EmulatorConfig,
    FaultRule,
)

REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
ERROR_KEYS = ["RequestId", "HostId", "Code", "Message", "Recommend"]
TRANSPORTS = [
    pytest.param("v1", "GET", False, id="v1-get-query"),
    pytest.param("v1", "POST", False, id="v1-post-query"),
    pytest.param("v1", "POST", True, id="v1-post-form"),
    pytest.param("v3", "GET", False, id="v3-get-query"),
    pytest.param("v3", "POST", False, id="v3-post-query"),
    pytest.param("v3", "POST", True, id="v3-post-form"),
]


@pytest.mark.parametrize(("scheme", "method", "in_body"), TRANSPORTS)
async def test_single_answers_the_fleet_status_with_the_exact_body(
    scheme: str, method: str, in_body: bool
) -> None:
    async with serving() as (emu, caller):
        for client_id in ids(8):
            reply = await caller.single(client_id, scheme=scheme, method=method, in_body=in_body)
            assert reply.status == 200, reply.body
            assert list(reply.body) == ["OnlineStatus", "RequestId"]
            assert reply.body["OnlineStatus"] is emu.fleet.is_online(client_id)
            assert REQUEST_ID.fullmatch(reply.body["RequestId"])
            assert reply.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(("scheme", "method", "in_body"), TRANSPORTS)
async def test_batch_answers_each_id_in_order_with_the_exact_body(
    scheme: str, method: str, in_body: bool
) -> None:
    client_ids = ids(10)
    async with serving() as (emu, caller):
        reply = await caller.batch(client_ids, scheme=scheme, method=method, in_body=in_body)
    assert reply.status == 200, reply.body
    assert list(reply.body) == ["RequestId", "OnlineStatusList"]
    assert REQUEST_ID.fullmatch(reply.body["RequestId"])
    entries = reply.body["OnlineStatusList"]
    assert all(list(e) == ["ClientId", "OnlineStatus"] for e in entries)
    assert [(e["ClientId"], e["OnlineStatus"]) for e in entries] == [
        (cid, emu.fleet.is_online(cid)) for cid in client_ids
    ]
    # Both statuses occur in ten IDs at ratio 0.5 with seed 0, so the check has teeth.
    assert {e["OnlineStatus"] for e in entries} == {True, False}


async def test_request_ids_are_unique() -> None:
    async with serving() as (_, caller):
        seen = {(await caller.single(cid)).body["RequestId"] for cid in ids(20)}
    assert len(seen) == 20


async def test_unknown_client_ids_answer_false(tmp_path: Path) -> None:
    csv = tmp_path / "fleet.csv"
    csv.write_text("client_id,online\nGID_test@@@known,true\n")
    async with serving(EmulatorConfig(fleet_csv=csv)) as (_, caller):
        known = await caller.single("GID_test@@@known")
        unknown = await caller.single("GID_test@@@never-connected")
        batch = await caller.batch(["GID_test@@@never-connected", "GID_test@@@known"])
    assert known.body["OnlineStatus"] is True
    assert unknown.status == 200
    assert unknown.body["OnlineStatus"] is False
    assert [e["OnlineStatus"] for e in batch.body["OnlineStatusList"]] == [False, True]


# --- request errors -------------------------------------------------------------------


def _assert_error(reply_status: int, body: dict[str, object], status: int, code: str) -> None:
    assert (reply_status, body.get("Code")) == (status, code), body
    assert list(body) == ERROR_KEYS
    assert body["HostId"] == "onsmqtt.cn-hangzhou.aliyuncs.com"
    assert isinstance(body["Message"], str)
    assert body["Message"]
    assert f"q={code}" in str(body["Recommend"])
    assert REQUEST_ID.fullmatch(str(body["RequestId"]))


@pytest.mark.parametrize("scheme", ["v1", "v3"])
async def test_wrong_version_is_invalid_version(scheme: str) -> None:
    async with serving() as (_, caller):
        reply = await caller.call(
            ACTION_SINGLE,
            {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": "GID_test@@@a"},
            scheme=scheme,
            version="2019-01-01",
        )
    _assert_error(reply.status, reply.body, 400, "InvalidVersion")


@pytest.mark.parametrize("scheme", ["v1", "v3"])
async def test_unknown_action_is_api_not_support(scheme: str) -> None:
    async with serving() as (_, caller):
        reply = await caller.call("QueryToken", {"InstanceId": "x"}, scheme=scheme)
    _assert_error(reply.status, reply.body, 404, "ApiNotSupport")


@pytest.mark.parametrize(
    ("action", "params", "code"),
    [
        (ACTION_SINGLE, {"ClientId": "GID_test@@@a"}, "MissingInstanceId"),
        (ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID}, "MissingClientId"),
        (ACTION_SINGLE, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientId": ""}, "MissingClientId"),
        (ACTION_BATCH, {"InstanceId": DEFAULT_INSTANCE_ID}, "MissingClientIdList"),
        (ACTION_BATCH, {"ClientIdList.1": "GID_test@@@a"}, "MissingInstanceId"),
    ],
)
@pytest.mark.parametrize("scheme", ["v1", "v3"])
async def test_missing_parameters(
    scheme: str, action: str, params: dict[str, str], code: str
) -> None:
    async with serving() as (_, caller):
        reply = await caller.call(action, params, scheme=scheme)
    _assert_error(reply.status, reply.body, 400, code)


async def test_more_than_ten_ids_in_a_batch_is_refused() -> None:
    async with serving() as (emu, caller):
        ten = await caller.batch(ids(10))
        eleven = await caller.batch(ids(11))
    assert ten.status == 200
    _assert_error(eleven.status, eleven.body, 400, "InvalidParameter.ClientIdList")
    assert "at most 10" in eleven.body["Message"]
    assert emu.stats().actions[ACTION_BATCH].successes == 1


async def test_batch_list_must_count_from_one_without_gaps() -> None:
    async with serving() as (_, caller):
        gap = await caller.call(
            ACTION_BATCH,
            {
                "InstanceId": DEFAULT_INSTANCE_ID,
                "ClientIdList.1": "GID_t@@@a",
                "ClientIdList.3": "x",
            },
        )
        zero = await caller.call(
            ACTION_BATCH, {"InstanceId": DEFAULT_INSTANCE_ID, "ClientIdList.0": "GID_test@@@a"}
        )
    _assert_error(gap.status, gap.body, 400, "InvalidParameter.ClientIdList")
    _assert_error(zero.status, zero.body, 400, "InvalidParameter.ClientIdList")


@pytest.mark.parametrize(
    "bad", ["no-separator", "XID_test@@@dev", "GID_test@@@dev 1", "GID_test@@@d/1", "GID_" * 20]
)
async def test_invalid_client_id_format(bad: str) -> None:
    async with serving() as (_, caller):
        single = await caller.single(bad)
        batch = await caller.batch(["GID_test@@@fine", bad])
    _assert_error(single.status, single.body, 400, "InvalidParameter.ClientId")
    _assert_error(batch.status, batch.body, 400, "InvalidParameter.ClientId")


async def test_unknown_instance_is_instance_not_found() -> None:
    config = EmulatorConfig(instance_ids=("mqtt-cn-one", "post-cn-two"))
    async with serving(config) as (_, caller):
        first = await caller.single("GID_test@@@a", scheme="v1")
        caller.instance_id = "post-cn-two"
        second = await caller.batch(["GID_test@@@a"])
        caller.instance_id = "mqtt-cn-elsewhere"
        wrong = await caller.single("GID_test@@@a")
    assert (first.status, second.status) == (400, 200)  # the default instance is not served
    _assert_error(first.status, first.body, 400, "InstanceNotFound")
    _assert_error(wrong.status, wrong.body, 400, "InstanceNotFound")
    assert "mqtt-cn-elsewhere" in wrong.body["Message"]


async def test_error_statuses_are_current_unless_legacy() -> None:
    rules = (
        FaultRule(code="SystemOverFlow", times=1),
        FaultRule(code="InternalError", times=1),
        FaultRule(code="ServiceUnavailable", times=1),
    )
    got = {}
    for legacy in (False, True):
        config = EmulatorConfig(rules=rules, legacy_statuses=legacy)
        async with serving(config) as (_, caller):
            replies = [await caller.single("GID_test@@@a") for _ in range(4)]
        got[legacy] = [(r.status, r.code) for r in replies]
    assert got[False] == [
        (403, "SystemOverFlow"),
        (417, "InternalError"),
        (503, "ServiceUnavailable"),
        (200, None),
    ]
    assert got[True] == [
        (500, "SystemOverFlow"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (200, None),
    ]


async def test_errors_use_the_service_body_for_every_code() -> None:
    async with serving(clock=FakeClock()) as (_, caller):
        reply = await caller.single("GID_test@@@a", secret="wrong")
    _assert_error(reply.status, reply.body, 400, "SignatureDoesNotMatch")
