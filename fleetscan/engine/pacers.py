"""The pacers a scan's settings call for (issue 10): every call holds its source
address's budget (all APIs together) and its API's account pacer (shared by every
address), in that order (`fleetscan.pacing.CompositePacer`).

So the single default is min(482, 270) = 270 calls/s from one address, not the 300 at
which Alibaba blocks it, and batch is 96/s, just under the account's 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fleetscan.engine.lanes import Session
from fleetscan.engine.settings import ScanSettings
from fleetscan.limits import Mode
from fleetscan.pacer import Pacer
from fleetscan.pacing import ACCOUNT_PACE, AccountPacer, AddressBudget, CompositePacer

__all__ = [
    "Route",
    "account_pacer",
    "address_shares",
    "default_pacer",
    "lane_pacers",
    "shared_rates",
]


@dataclass(frozen=True, slots=True)
class Route:
    """One source address of a scan: the client whose calls leave from it and its
    budget (on that client's session at the wire: `AddressBudget.trace_config`)."""

    client: Session
    budget: AddressBudget
    # Each lane's pacer from this address when the scan brings its own (the shared
    # budget's: `shared_lane_pacers`); None: composed from the settings.
    pacers: Mapping[Mode, Pacer] | None = None


def account_pacer(settings: ScanSettings, mode: Mode, rate: float | None = None) -> AccountPacer:
    """The account pacer of ``mode``'s API at ``rate`` (default: the settings' API rate),
    guarding the account's limit (``account_qps`` when the settings raise it)."""
    limit = None if settings.account_qps is None else math.ceil(settings.account_qps)
    return AccountPacer(mode, settings.api_rate if rate is None else rate, limit=limit)


def default_pacer(settings: ScanSettings) -> CompositePacer:
    """One address budget composed with the settings' API's account pacer."""
    return CompositePacer(
        AddressBudget(settings.address_budget), account_pacer(settings, settings.lane_mode)
    )


def lane_pacers(settings: ScanSettings) -> dict[Mode, CompositePacer]:
    """Each lane's pacer: one address budget shared by the lanes, each lane's API at
    its pace (`ScanSettings.lane_rates`: what the budget leaves the single lane)."""
    address = AddressBudget(settings.address_budget)
    return {
        mode: CompositePacer(address, account_pacer(settings, mode, rate))
        for mode, rate in settings.lane_rates.items()
    }


def shared_rates(settings: ScanSettings) -> dict[Mode, tuple[float, float | None]]:
    """Each lane's API rate on a shared budget (``--limiter``), and its share of each
    address's budget (None: the whole budget).

    The rate is the account's, spent by every process together, at the local pacer's
    paces (``--qps``, or 482 single and 96 batch: `fleetscan.pacing.ACCOUNT_PACE`).
    The shared budget keeps its own margin for 40 ms of arrival jitter under them;
    the paces' margin comes on top, for what no shared budget sees: the time between a
    process's permit and its write to the wire, which the local pacer guards at the
    wire (at the account's limit itself, a loaded machine saw 101 batch calls in a
    second). With two lanes, single's rate is the account's too, not what this
    process's addresses leave it (other processes send from other addresses, and
    together they may use the whole account), and each address's budget is split
    between the APIs for every process behind it (`address_shares`), so the single
    lanes never take the batch lanes' part.
    """
    rates = settings.lane_rates
    if not settings.two_lanes:
        return {mode: (rate, None) for mode, rate in rates.items()}
    shares = address_shares(settings)
    return {
        "batch": (rates["batch"], shares["batch"]),
        "single": (float(ACCOUNT_PACE["single"]), shares["single"]),
    }


def address_shares(settings: ScanSettings) -> dict[Mode, float]:
    """Each API's share of one address's budget in a two-lane scan: batch its lane's
    rate, single the rest (at most its pace): 96 and 174 of 270.

    Shared by every process behind the address, as `fleetscan.pacing.lane_rates`
    splits one process's: without it the single lanes' calls, many and quick, queue
    for the address ahead of the batch lanes' (ten processes behind one address made
    280-405 IDs/s; split, 1,059).
    """
    return settings.lane_rates_from(1)
