"""The one mapping from API answers to the exception tree: by Code first, then status."""

from __future__ import annotations

import pytest

from fleetscan.errors import (
    AccountError,
    ApiError,
    ClientIdError,
    InputError,
    ResignError,
    ThrottledError,
    TimedOutError,
    TransientError,
    api_error,
)


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("SystemOverFlow", 403, ThrottledError),
        ("SystemOverFlow", 500, ThrottledError),
        ("Throttling.User", 400, ThrottledError),
        ("Throttling.Whatever", 400, ThrottledError),
        ("InternalError", 417, TransientError),
        ("InternalError", 500, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        ("Timeout", None, TimedOutError),
        ("ConnectionError", None, TransientError),
        ("InvalidParameter.ClientId", 400, ClientIdError),
        ("ParameterCheckFailed", 400, ClientIdError),
        ("InstanceNotFound", 400, AccountError),
        ("InstancePermissionCheckFailed", 400, AccountError),
        ("SignatureDoesNotMatch", 400, AccountError),
        ("InvalidAccessKeyId.NotFound", 404, AccountError),
        ("Forbidden.RAM", 403, AccountError),
        ("Forbidden.SourceIpBlocked", 403, AccountError),
        ("ApiNotSupport", 404, AccountError),
        ("MissingInstanceId", 400, AccountError),
        ("MissingSecurityToken", 400, AccountError),
        ("InvalidTimeStamp.Format", 400, AccountError),
        ("InvalidSecurityToken.Expired", 400, AccountError),
        ("SignatureNonceUsed", 400, ResignError),
        ("InvalidTimeStamp.Expired", 400, ResignError),
        (None, 502, TransientError),
        (None, 504, TransientError),
        ("SomethingNew", 500, TransientError),
        ("SomethingNew", 400, ClientIdError),
        (None, 429, ThrottledError),
        (None, None, TransientError),
    ],
)
def test_code_decides_before_status(code: str | None, status: int | None, cls: type) -> None:
    err = api_error(code, "m", http_status=status, request_id="r", retry_after=0.5)
    assert type(err) is cls
    assert err.http_status == status
    assert err.retry_after == 0.5
    assert err.to_record() == {
        "code": code or f"HTTP{status}",
        "message": "m",
        "http_status": status,
    }


def test_a_timeout_is_told_by_its_type_and_is_retried_as_transient() -> None:
    err = api_error("Timeout", "no complete answer within 10 s", http_status=None)
    assert isinstance(err, TimedOutError)
    assert isinstance(err, TransientError)
    assert not isinstance(api_error("ConnectionError", "m", http_status=None), TimedOutError)


def test_a_403_can_mean_retry_or_stop() -> None:
    throttled = api_error("SystemOverFlow", "", http_status=403)
    denied = api_error("Forbidden", "", http_status=403)
    assert isinstance(throttled, ThrottledError)
    assert isinstance(denied, AccountError)
    assert isinstance(throttled, ApiError)


def test_input_error_names_file_and_line() -> None:
    err = InputError("bad bytes", source="ids.csv", line=7)
    assert str(err) == "ids.csv:7: bad bytes"
    assert (err.source, err.line) == ("ids.csv", 7)
