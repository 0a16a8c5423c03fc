"""The scan engine: settings, the feed, admission, lanes, the warm-up gate, live
counters, the scanner that stops and drains, the assembled job and `scan`.

Named ``engine``, not ``scan``: ``fleetscan.scan`` is the library's scan function, and
a subpackage of the same name would be shadowed by it (``import fleetscan.scan as m``
would give the function).

Its members are imported on first use (PEP 562), as the package root's are: the
command imports `fleetscan.engine.outcome` before it has taken over the signals, and
that must not load aiohttp.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
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
        default_rate,
        rate_warnings,
    )
    from fleetscan.engine.shared import LimiterSettings

_EXPORTS = {
    "LANES": "fleetscan.engine.lanes",
    "Admission": "fleetscan.engine.admit",
    "BatchLane": "fleetscan.engine.lanes",
    "Feed": "fleetscan.engine.feed",
    "Lane": "fleetscan.engine.lanes",
    "LimiterSettings": "fleetscan.engine.shared",
    "Outcome": "fleetscan.engine.outcome",
    "ProgressHook": "fleetscan.engine.job",
    "ScanJob": "fleetscan.engine.job",
    "ScanResult": "fleetscan.engine.job",
    "ScanSettings": "fleetscan.engine.settings",
    "Scanner": "fleetscan.engine.scanner",
    "Session": "fleetscan.engine.lanes",
    "SingleLane": "fleetscan.engine.lanes",
    "Target": "fleetscan.engine.job",
    "ThreadFeed": "fleetscan.engine.feed",
    "checked_rate": "fleetscan.engine.settings",
    "default_concurrency": "fleetscan.engine.settings",
    "default_rate": "fleetscan.engine.settings",
    "outcome_of": "fleetscan.engine.outcome",
    "rate_warnings": "fleetscan.engine.settings",
    "scan": "fleetscan.engine.library",
    "tally": "fleetscan.engine.admit",
}

__all__ = [
    "LANES",
    "Admission",
    "BatchLane",
    "Feed",
    "Lane",
    "LimiterSettings",
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
    "default_rate",
    "outcome_of",
    "rate_warnings",
    "scan",
    "tally",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetscan.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
