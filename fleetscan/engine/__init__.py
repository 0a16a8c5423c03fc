"""The scan engine: settings, the feed, admission, lanes, the warm-up gate, live
counters, the scanner that stops and drains, the assembled job and `scan`.

Named ``engine``, not ``scan``: ``fleetscan.scan`` is the library's scan function, and
a subpackage of the same name would be shadowed by it (``import fleetscan.scan as m``
would give the function).
"""

from fleetscan.engine.admit import Admission, tally
from fleetscan.engine.feed import Feed, ThreadFeed
from fleetscan.engine.job import ProgressHook, ScanJob, ScanResult, Target
from fleetscan.engine.lanes import LANES, BatchLane, Lane, Session, SingleLane
from fleetscan.engine.library import scan
from fleetscan.engine.outcome import Outcome, outcome_of
from fleetscan.engine.scanner import Scanner
from fleetscan.engine.settings import (
    ScanSettings,
    checked_rate,
    default_concurrency,
    rate_warnings,
)

__all__ = [
    "LANES",
    "Admission",
    "BatchLane",
    "Feed",
    "Lane",
    "Outcome",
    "ProgressHook",
    "ScanJob",
    "ScanResult",
    "ScanSettings",
    "Scanner",
    "Session",
    "SingleLane",
    "Target",
    "ThreadFeed",
    "checked_rate",
    "default_concurrency",
    "outcome_of",
    "rate_warnings",
    "scan",
    "tally",
]
