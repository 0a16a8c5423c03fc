"""The one place aiohttp's (and the socket's) exceptions become `ApiError`s.

A timeout becomes a `TimedOutError`, so callers tell timeouts by type.
"""

from __future__ import annotations

from typing import Final

import aiohttp

from fleetscan.client.answers import MALFORMED
from fleetscan.errors import ApiError, api_error

__all__ = ["TIMEOUT_CODE", "TRANSPORT_ERRORS", "no_answer"]

# The record's code for an attempt with no complete answer in time (a TimedOutError).
TIMEOUT_CODE: Final = "Timeout"
# What a request may raise that `no_answer` maps.
TRANSPORT_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)


def no_answer(exc: BaseException, timeout: float) -> ApiError:
    """The ApiError for a request that got no usable answer; raise it ``from None``.

    Messages are built here, never copied whole: some aiohttp messages hold the URL,
    which holds the STS token under V1.
    """
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it
        code, message = TIMEOUT_CODE, f"no complete answer within {timeout:g} s"
    elif isinstance(exc, aiohttp.ClientSSLError):
        code, message = "TLSError", f"TLS failed: {exc}"
    elif isinstance(exc, aiohttp.ClientOSError):  # connect failures name host:port only
        code, message = "ConnectionError", str(exc)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        code, message = "ConnectionError", "the server closed the connection without answering"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        code, message = "ConnectionError", "the connection dropped in the middle of the answer"
    elif isinstance(exc, aiohttp.ClientResponseError):
        code, message = MALFORMED, f"not a valid HTTP answer ({exc.message})"
    else:
        code, message = "ConnectionError", type(exc).__name__
    return api_error(code, message, http_status=None)
