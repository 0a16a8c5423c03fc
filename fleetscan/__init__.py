"""fleetscan: check the online status of very large fleets of MQTT devices on Alibaba
Cloud ApsaraMQ for MQTT, paced under the API's limits.

The library's entry points: `scan` (an async generator of records, the twin of
``fleetscan scan``), `Scanner` for pipelines that bring their own client, limiter and
writer, and `connect` for an `OnsMqttClient`.
"""

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
from fleetscan.version import __version__

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
