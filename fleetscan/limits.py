"""The API's facts (onsmqtt-api.md sections 1-2): version, operations, limits, and the
rates fleetscan picks under them. The client and the emulator both take them from here."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "API_VERSION",
    "BATCH_API",
    "BATCH_SIZE",
    "DEFAULT_QPS",
    "IP_SAFE_QPS",
    "MAX_CONCURRENCY",
    "MAX_QPS",
    "MODES",
    "RETRY_AFTER_HEADER",
    "SINGLE_API",
    "Mode",
    "api_for",
]

API_VERSION = "2020-04-20"
Mode = Literal["single", "batch"]
MODES: tuple[Mode, ...] = ("single", "batch")
SINGLE_API = "QuerySessionByClientId"
BATCH_API = "BatchQuerySessionByClientIds"
# Client IDs per BatchQuerySessionByClientIds call.
BATCH_SIZE = 10
# Calls/s an account may make of each API; over it the server answers SystemOverFlow.
MAX_QPS: dict[Mode, int] = {"single": 500, "batch": 100}
# Past this many calls/s from one source IP, Alibaba blocks the IP. Read the safe way:
# all APIs together (onsmqtt-api.md section 2); `pacing` keeps a budget under it.
IP_SAFE_QPS = 300
# Throttled answers may say how long to back off, in milliseconds, in this header.
RETRY_AFTER_HEADER = "x-acs-retry-after"
DEFAULT_QPS: dict[Mode, int] = {"single": IP_SAFE_QPS, "batch": MAX_QPS["batch"]}
# Calls in flight at most: 500 calls/s (the account's limit) at 2 s latency. More
# only costs memory and sockets (200,000 took 264 MB for a 226-ID file).
MAX_CONCURRENCY = 1000


def api_for(mode: Mode) -> str:
    return SINGLE_API if mode == "single" else BATCH_API
