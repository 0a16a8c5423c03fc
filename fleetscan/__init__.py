"""fleetscan: check the online status of very large fleets of MQTT devices on Alibaba
Cloud ApsaraMQ for MQTT, paced under the API's limits.

The library's entry points: `scan` (an async generator of records, the twin of
``fleetscan scan``), `ScanJob` (the same scan with sinks of your own, a result with
its `Outcome` and summary), `Scanner` for pipelines that bring their own client and
pacer, and `connect` for an `OnsMqttClient`. The engine lives in `fleetscan.engine`.
"""

__version__ = "0.1.0"

from fleetscan.client import BatchAnswer, OnsMqttClient, SessionAnswer, connect
from fleetscan.credentials import (
    Credentials,
    CredentialsProvider,
    StaticCredentials,
    resolve_credentials,
)
from fleetscan.dedup import SeenSet
from fleetscan.engine import Outcome, ScanJob, Scanner, ScanResult, ScanSettings, Target, scan
from fleetscan.errors import (
    AccountError,
    ApiError,
    ClientIdError,
    CredentialsError,
    FleetscanError,
    InputError,
    ResignError,
    ThrottledError,
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
