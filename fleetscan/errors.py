"""fleetscan's exceptions, and the one place where API answers become them.

::

    FleetscanError
    ├── UsageError            bad options or arguments                      (exit 2)
    ├── InputError            a malformed input file; names file and line   (exit 2)
    ├── CredentialsError      no usable credentials were found              (exit 2)
    ├── LimiterError          the shared limiter (Redis) cannot pace the scan
    │   ├── LimiterUnavailableError  unreachable or unusable at start: no call
    │   │                     was made                                      (exit 2)
    │   └── LimiterLostError  lost mid-scan for longer than the limiter's
    │                         timeout: stop gracefully, resumable           (exit 3)
    └── ApiError              an error answer, or no answer, from the API
        ├── ThrottledError    SystemOverFlow, Throttling*: back off, slow down, retry
        ├── TransientError    InternalError, ServiceUnavailable, 5xx, timeouts,
        │   │                 dropped connections, unreadable bodies: retry
        │   └── TimedOutError no complete answer within the attempt timeout (the
        │                     server may still have answered, and billed, it)
        ├── ResignError       SignatureNonceUsed, InvalidTimeStamp.Expired: re-sign and
        │                     retry once, then treat as AccountError
        ├── ClientIdError     InvalidParameter*, ParameterCheckFailed and other
        │                     request-level 4xx: this ID fails, the scan goes on
        └── AccountError      credentials, permission, instance, ApiNotSupport, a
                              certificate that does not verify: the whole scan
                              is misconfigured; stop it                         (exit 3)

`api_error` maps a wire answer (HTTP status and the body's ``Code``) to this tree. It
decides by ``Code`` first: Alibaba moved ``SystemOverFlow`` from 500 to 403 and
``InternalError`` from 500 to 417, so a status alone cannot tell "throttled" from
"denied". Nothing else in fleetscan looks at a status or a code to decide what to do.
"""

from __future__ import annotations

__all__ = [
    "AccountError",
    "ApiError",
    "ClientIdError",
    "CredentialsError",
    "FleetscanError",
    "InputError",
    "LimiterError",
    "LimiterLostError",
    "LimiterUnavailableError",
    "ResignError",
    "ThrottledError",
    "TimedOutError",
    "TransientError",
    "UsageError",
    "api_error",
]


class FleetscanError(Exception):
    """The root of every error fleetscan raises on purpose."""


class UsageError(FleetscanError):
    """The options or arguments cannot work together."""


class InputError(FleetscanError):
    """An input file is malformed. ``source`` and ``line`` say where (line is 1-based)."""

    def __init__(self, message: str, *, source: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")


class CredentialsError(FleetscanError):
    """No usable credentials. The message names every place that was tried."""


class LimiterError(FleetscanError):
    """The shared limiter cannot pace the scan. Messages never show its password."""


class LimiterUnavailableError(LimiterError):
    """The shared limiter is unreachable or unusable at start: nothing was sent."""


class LimiterLostError(LimiterError):
    """The shared limiter was lost mid-scan for longer than its timeout: stop sending,
    gracefully (an unshared full rate could exceed the account's budget)."""


class ApiError(FleetscanError):
    """An error answer, or no usable answer, for one API call.

    ``code`` is the API's ``Code`` (or a fleetscan code for non-answers such as
    ``Timeout`` and ``ConnectionError``); ``http_status`` is None when no response
    arrived; ``retry_after`` is the server's hint in seconds, when it gave one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after
        # Attempts the call made before giving up; set by the retry policy.
        self.attempts = 1
        status = "no response" if http_status is None else f"HTTP {http_status}"
        super().__init__(f"{code} ({status}): {message}")

    def to_record(self) -> dict[str, object]:
        """The ``error`` object of an NDJSON record."""
        return {"code": self.code, "message": self.message, "http_status": self.http_status}


class ThrottledError(ApiError):
    """The account or API limit was hit: back off, slow down, retry."""


class TransientError(ApiError):
    """A passing server or network fault: retry with backoff."""


class TimedOutError(TransientError):
    """No complete answer in time. The call may still have been served (and billed),
    so the summary counts these apart; callers tell them by this type, not by code."""


class ResignError(ApiError):
    """The signature was refused for its nonce or timestamp: sign afresh, retry once."""


class ClientIdError(ApiError):
    """The request was refused for something in it (usually the client ID): record it."""


class AccountError(ApiError):
    """Credentials, permission or instance are wrong: every call will fail the same way."""


# Codes whose meaning does not depend on the HTTP status that carries them.
_CODE_CLASSES: dict[str, type[ApiError]] = {
    "SystemOverFlow": ThrottledError,
    "Throttling": ThrottledError,
    "Throttling.User": ThrottledError,
    "Throttling.Api": ThrottledError,
    "InternalError": TransientError,
    "ServiceUnavailable": TransientError,
    # fleetscan's own codes for answers that never came or could not be read.
    "Timeout": TimedOutError,
    "ConnectionError": TransientError,
    "MalformedResponse": TransientError,
    # A certificate that does not verify will not start verifying on a retry.
    "TLSError": AccountError,
    "SignatureNonceUsed": ResignError,
    "InvalidTimeStamp.Expired": ResignError,
    "ParameterCheckFailed": ClientIdError,
    "InstancePermissionCheckFailed": AccountError,
    "PermissionCheckFailed": AccountError,
    "CheckAccountInfoFailed": AccountError,
    "InstanceNotFound": AccountError,
    "InvalidAccessKeyId.NotFound": AccountError,
    "InvalidAccessKeyId.Inactive": AccountError,
    "InvalidAccessKeyId": AccountError,
    "InvalidSecurityToken.Expired": AccountError,
    "InvalidSecurityToken.Malformed": AccountError,
    "InvalidSecurityToken.MismatchWithAccessKey": AccountError,
    "SignatureDoesNotMatch": AccountError,
    "IncompleteSignature": AccountError,
    "Forbidden": AccountError,
    "Forbidden.RAM": AccountError,
    "Forbidden.AccessKeyDisabled": AccountError,
    "InvalidApi.NotPurchase": AccountError,
    "ApiNotSupport": AccountError,
    "InvalidVersion": AccountError,
    "InvalidAction.NotFound": AccountError,
    "MissingParameter": AccountError,
    "InvalidTimeStamp.Format": AccountError,
}

# Code prefixes, for families such as ``InvalidParameter.ClientId``.
_PREFIX_CLASSES: tuple[tuple[str, type[ApiError]], ...] = (
    ("Throttling.", ThrottledError),
    ("InvalidParameter", ClientIdError),
    ("Forbidden.", AccountError),
    ("InvalidAccessKeyId.", AccountError),
    ("InvalidSecurityToken.", AccountError),
    # MissingInstanceId, MissingSecurityToken ...: the request is built wrong, every
    # call will fail alike.
    ("Missing", AccountError),
)


def api_error(
    code: str | None,
    message: str | None,
    *,
    http_status: int | None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> ApiError:
    """Map an error answer to the exception tree: by ``Code``, then by status."""
    cls: type[ApiError] | None = None
    if code:
        cls = _CODE_CLASSES.get(code)
        if cls is None:
            cls = next((c for p, c in _PREFIX_CLASSES if code.startswith(p)), None)
    if cls is None:
        cls = _class_for_status(http_status)
    return cls(
        code or f"HTTP{http_status}",
        message or "",
        http_status=http_status,
        request_id=request_id,
        retry_after=retry_after,
    )


def _class_for_status(http_status: int | None) -> type[ApiError]:
    # An unknown code: gateways and proxies answer 5xx for passing trouble; an
    # unknown 4xx is most likely about this request, so record it and go on.
    if http_status is None or http_status >= 500 or http_status in (408, 429):
        return ThrottledError if http_status == 429 else TransientError
    return ClientIdError
