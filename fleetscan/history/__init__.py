"""Fleet state between scans, in SQLite: what each device answered, since when.

- `schema`: the tables, ``PRAGMA user_version`` and the migrations.
- `recorder`: `HistoryRecorder` writes a scan's records from a thread of its own;
  `HistorySink` is it as one of the scan's sinks (a failure of its thread mid-scan:
  `HistoryWriteError`, which stops the scan as an output failure does).
- `queries`: offline devices, changes, per-group online share, scans.
"""

from fleetscan.history.recorder import HistoryRecorder, HistorySink, HistoryWriteError, ScanRow
from fleetscan.history.schema import SCHEMA_VERSION, HistoryError, open_database

__all__ = [
    "SCHEMA_VERSION",
    "HistoryError",
    "HistoryRecorder",
    "HistorySink",
    "HistoryWriteError",
    "ScanRow",
    "open_database",
]
