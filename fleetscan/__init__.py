"""fleetscan: check the online status of very large fleets of MQTT devices on Alibaba
Cloud ApsaraMQ for MQTT, paced under the API's limits.

The library's entry points: `scan` (an async generator of records, the twin of
``fleetscan scan``), `Scanner` for pipelines that bring their own client, limiter and
writer, and `connect` for an `OnsMqttClient`.
"""

import importlib
import typing

from fleetscan.version import __version__

if typing.TYPE_CHECKING:
    from fleetscan.client import BatchAnswer, OnsMqttClient, SessionAnswer, connect
    from fleetscan.credentials import (
        Credentials,
        CredentialsProvider,
        StaticCredentials,
        resolve_credentials,
    )
    from fleetscan.dedup import SeenSet
    from fleetscan.errors import (
        AccountError,
        ApiError,
        ClientIdError,
        CredentialsError,
        FleetscanError,
        InputError,
        ResignError,
        ThrottledError,
        TimedOutError,
        TransientError,
        UsageError,
    )
    from fleetscan.estimate import Forecast, forecast
    from fleetscan.inputs import InputRow, read_client_ids
    from fleetscan.limiter import RateLimiter
    from fleetscan.output import RecordWriter, ResumeState, prepare_resume
    from fleetscan.records import Record, Status
    from fleetscan.retry import RetryPolicy
    from fleetscan.scanner import Scanner, ScanSettings, scan
    from fleetscan.summary import ScanCounters, ScanSummary

# Imported on first use (PEP 562): `import fleetscan.cli` stays light, so the command
# takes over SIGINT and SIGTERM before aiohttp and the rest are loaded (a second or
# more on a busy machine, when a signal used to end the process with a traceback or 143).
_EXPORTS = {
    "AccountError": "fleetscan.errors",
    "ApiError": "fleetscan.errors",
    "BatchAnswer": "fleetscan.client",
    "ClientIdError": "fleetscan.errors",
    "Credentials": "fleetscan.credentials",
    "CredentialsError": "fleetscan.errors",
    "CredentialsProvider": "fleetscan.credentials",
    "FleetscanError": "fleetscan.errors",
    "Forecast": "fleetscan.estimate",
    "InputError": "fleetscan.errors",
    "InputRow": "fleetscan.inputs",
    "OnsMqttClient": "fleetscan.client",
    "RateLimiter": "fleetscan.limiter",
    "Record": "fleetscan.records",
    "RecordWriter": "fleetscan.output",
    "ResignError": "fleetscan.errors",
    "ResumeState": "fleetscan.output",
    "RetryPolicy": "fleetscan.retry",
    "ScanCounters": "fleetscan.summary",
    "ScanSettings": "fleetscan.scanner",
    "ScanSummary": "fleetscan.summary",
    "Scanner": "fleetscan.scanner",
    "SeenSet": "fleetscan.dedup",
    "SessionAnswer": "fleetscan.client",
    "StaticCredentials": "fleetscan.credentials",
    "Status": "fleetscan.records",
    "ThrottledError": "fleetscan.errors",
    "TimedOutError": "fleetscan.errors",
    "TransientError": "fleetscan.errors",
    "UsageError": "fleetscan.errors",
    "connect": "fleetscan.client",
    "forecast": "fleetscan.estimate",
    "prepare_resume": "fleetscan.output",
    "read_client_ids": "fleetscan.inputs",
    "resolve_credentials": "fleetscan.credentials",
    "scan": "fleetscan.scanner",
}


__all__ = [
    "AccountError",
    "ApiError",
    "BatchAnswer",
    "ClientIdError",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
    "FleetscanError",
    "Forecast",
    "InputError",
    "InputRow",
    "OnsMqttClient",
    "RateLimiter",
    "Record",
    "RecordWriter",
    "ResignError",
    "ResumeState",
    "RetryPolicy",
    "ScanCounters",
    "ScanSettings",
    "ScanSummary",
    "Scanner",
    "SeenSet",
    "SessionAnswer",
    "StaticCredentials",
    "Status",
    "ThrottledError",
    "TimedOutError",
    "TransientError",
    "UsageError",
    "__version__",
    "connect",
    "forecast",
    "prepare_resume",
    "read_client_ids",
    "resolve_credentials",
    "scan",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetscan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
