"""fleetscan: check the online status of very large fleets of MQTT devices on Alibaba
Cloud ApsaraMQ for MQTT, paced under the API's limits.

The library's entry points: `scan` (an async generator of records, the twin of
``fleetscan scan``), `ScanJob` (the same scan with sinks of your own, a result with
its `Outcome` and summary), `Scanner` for pipelines that bring their own client and
pacer, and `connect` for an `OnsMqttClient`. The engine lives in `fleetscan.engine`.
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
    from fleetscan.engine import (
        Outcome,
        ScanJob,
        Scanner,
        ScanResult,
        ScanSettings,
        Target,
        scan,
    )
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
    from fleetscan.pacer import Pacer
    from fleetscan.records import Record, Status
    from fleetscan.retry import RetryPolicy
    from fleetscan.sink import Sink
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
    "Outcome": "fleetscan.engine",
    "Pacer": "fleetscan.pacer",
    "RateLimiter": "fleetscan.limiter",
    "Record": "fleetscan.records",
    "RecordWriter": "fleetscan.output",
    "ResignError": "fleetscan.errors",
    "ResumeState": "fleetscan.output",
    "RetryPolicy": "fleetscan.retry",
    "ScanCounters": "fleetscan.summary",
    "ScanJob": "fleetscan.engine",
    "ScanResult": "fleetscan.engine",
    "ScanSettings": "fleetscan.engine",
    "ScanSummary": "fleetscan.summary",
    "Scanner": "fleetscan.engine",
    "SeenSet": "fleetscan.dedup",
    "SessionAnswer": "fleetscan.client",
    "Sink": "fleetscan.sink",
    "StaticCredentials": "fleetscan.credentials",
    "Status": "fleetscan.records",
    "Target": "fleetscan.engine",
    "ThrottledError": "fleetscan.errors",
    "TimedOutError": "fleetscan.errors",
    "TransientError": "fleetscan.errors",
    "UsageError": "fleetscan.errors",
    "connect": "fleetscan.client",
    "forecast": "fleetscan.estimate",
    "prepare_resume": "fleetscan.output",
    "read_client_ids": "fleetscan.inputs",
    "resolve_credentials": "fleetscan.credentials",
    "scan": "fleetscan.engine",
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
    "Outcome",
    "Pacer",
    "RateLimiter",
    "Record",
    "RecordWriter",
    "ResignError",
    "ResumeState",
    "RetryPolicy",
    "ScanCounters",
    "ScanJob",
    "ScanResult",
    "ScanSettings",
    "ScanSummary",
    "Scanner",
    "SeenSet",
    "SessionAnswer",
    "Sink",
    "StaticCredentials",
    "Status",
    "Target",
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
