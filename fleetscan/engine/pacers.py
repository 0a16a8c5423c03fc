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
from fleetscan.limits import MAX_QPS, Mode
from fleetscan.pacer import Pacer
from fleetscan.pacing import AccountPacer, AddressBudget, CompositePacer

__all__ = [
    "Route",
    "account_pacer",
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
    """Each lane's API rate on a shared budget (``--limiter``), and its cap in this
    process (None: none).

    The rate is the account's, spent by every process together: ``--qps`` when given,
    else the account's limit (`account_limit`). Two lanes: single at the account's,
    not at what this process's addresses leave it (other processes send from other
    addresses, and together they may use the whole account), but capped in this
    process at its lane's rate (`ScanSettings.lane_rates`: what this process's address
    budgets leave the single lane beside batch), so it never takes the batch lane's
    part of an address budget, as `fleetscan.pacing.lane_rates` explains. Batch's cap
    is the account's rate itself.
    """
    rates = settings.lane_rates
    if not settings.two_lanes:
        if settings.qps is not None:
            return {mode: (rate, None) for mode, rate in rates.items()}
        return {mode: (account_limit(settings, mode), None) for mode in rates}
    return {
        "batch": (account_limit(settings, "batch"), None),
        "single": (account_limit(settings, "single"), rates["single"]),
    }


def account_limit(settings: ScanSettings, mode: Mode) -> float:
    """The account's limit for ``mode``'s API (``account_qps`` when the settings raise
    the one API's). A shared budget keeps its arrivals within it under the jitter the
    local paces (`fleetscan.pacing.ACCOUNT_PACE`) leave room for: it takes the limit."""
    if settings.account_qps is not None and (
        settings.two_lanes is False or mode == settings.lane_mode
    ):
        return float(settings.account_qps)
    return float(MAX_QPS[mode])
