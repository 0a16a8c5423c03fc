"""The bodies and statuses the emulator answers with, shaped like the real service's.

Success bodies are exactly those of ``onsmqtt-api.md`` section 1. Error bodies are
``{"RequestId", "HostId", "Code", "Message", "Recommend"}`` with the current HTTP
statuses (``SystemOverFlow`` 403, ``InternalError`` 417), or the older 500s for both
when ``legacy_statuses`` is set.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import orjson
from aiohttp import web

from fleetscan.limits import RETRY_AFTER_HEADER

__all__ = [
    "CURRENT_STATUSES",
    "LEGACY_STATUSES",
    "MESSAGES",
    "Answers",
    "Refusal",
    "RequestIds",
]

_JSON = "application/json;charset=utf-8"

# HTTP status per code; a code not listed is a 400.
CURRENT_STATUSES: Mapping[str, int] = {
    "SystemOverFlow": 403,
    "InternalError": 417,
    "ServiceUnavailable": 503,
    "Throttling": 400,
    "Throttling.User": 400,
    "Throttling.Api": 400,
    "Forbidden": 403,
    "Forbidden.RAM": 403,
    "Forbidden.SourceIpBlocked": 403,
    "InvalidAccessKeyId.NotFound": 404,
    "InvalidAccessKeyId.Inactive": 400,
    "ApiNotSupport": 404,
}
# Before Alibaba moved them, both answered 500.
LEGACY_STATUSES: Mapping[str, int] = {
    **CURRENT_STATUSES,
    "SystemOverFlow": 500,
    "InternalError": 500,
}

# The service's wording where it is known; used when a fault names only a code.
MESSAGES: Mapping[str, str] = {
    "SystemOverFlow": "Request was denied due to system flow control, please try again later.",
    "Throttling": "Request was denied due to request throttling.",
    "Throttling.User": "Request was denied due to user flow control.",
    "Throttling.Api": "Request was denied due to api flow control.",
    "InternalError": (
        "The request processing has failed due to some unknown error, exception or failure."
    ),
    "ServiceUnavailable": "The request has failed due to a temporary failure of the server.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
    "InvalidAccessKeyId.Inactive": "Specified access key is disabled.",
    "SignatureDoesNotMatch": "Specified signature does not match our calculation.",
    "IncompleteSignature": "The request signature does not conform to Aliyun standards.",
    "SignatureNonceUsed": "Specified signature nonce was used already.",
    "InvalidTimeStamp.Expired": "Specified time stamp or date value is expired.",
    "InvalidTimeStamp.Format": "Specified time stamp or date value is not well formatted.",
    "MissingSecurityToken": "SecurityToken is mandatory for this action.",
    "InvalidSecurityToken.MismatchWithAccessKey": (
        "Specified SecurityToken mismatch with the AccessKey."
    ),
    "InvalidSecurityToken.Expired": "Specified SecurityToken is expired.",
    "InvalidVersion": "Specified parameter Version is not valid.",
    "ApiNotSupport": "The API is not supported.",
    "InstanceNotFound": "The specified instance is not found.",
    "Forbidden": "User not authorized to operate on the specified resource.",
}


class Refusal(Exception):
    """An error answer: the request is refused with ``code``."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_ms = retry_after_ms


class RequestIds:
    """Request IDs in the service's uppercase UUID shape, repeatable from a seed."""

    __slots__ = ("_next", "_prefix")

    def __init__(self, seed: int) -> None:
        bits = random.Random(f"request-ids:{seed}").getrandbits(80)
        hexed = f"{bits:020X}"
        # The first 20 hex digits are fixed per seed, the last 12 count requests.
        self._prefix = f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-"
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self._prefix}{self._next:012X}"


class Answers:
    """Builds the HTTP responses of the API path."""

    __slots__ = ("_host_id", "_statuses", "request_id")

    def __init__(self, *, region: str, seed: int, legacy_statuses: bool) -> None:
        self._host_id = f"onsmqtt.{region}.aliyuncs.com"
        self._statuses = LEGACY_STATUSES if legacy_statuses else CURRENT_STATUSES
        self.request_id = RequestIds(seed)

    def status_of(self, code: str) -> int:
        """The HTTP status the service answers ``code`` with."""
        return self._statuses.get(code, 400)

    def single(self, online: bool) -> web.Response:
        """``{"OnlineStatus": …, "RequestId": …}``."""
        body = orjson.dumps({"OnlineStatus": online, "RequestId": self.request_id()})
        return web.Response(body=body, headers={"Content-Type": _JSON})

    def batch(self, statuses: Iterable[tuple[str, bool]]) -> web.Response:
        """``{"RequestId": …, "OnlineStatusList": [{"ClientId", "OnlineStatus"}, …]}``."""
        body = orjson.dumps(
            {
                "RequestId": self.request_id(),
                "OnlineStatusList": [
                    {"ClientId": cid, "OnlineStatus": online} for cid, online in statuses
                ],
            }
        )
        return web.Response(body=body, headers={"Content-Type": _JSON})

    def error(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        retry_after_ms: int | None = None,
    ) -> web.Response:
        """An error body with the status the service uses for ``code``."""
        request_id = self.request_id()
        body = orjson.dumps(
            {
                "RequestId": request_id,
                "HostId": self._host_id,
                "Code": code,
                "Message": message or MESSAGES.get(code, f"{code}."),
                "Recommend": (
                    "https://api.alibabacloud.com/troubleshoot"
                    f"?q={code}&product=OnsMqtt&requestId={request_id}"
                ),
            }
        )
        headers = {"Content-Type": _JSON}
        if retry_after_ms is not None and retry_after_ms > 0:
            headers[RETRY_AFTER_HEADER] = str(retry_after_ms)
        return web.Response(body=body, status=status or self.status_of(code), headers=headers)
