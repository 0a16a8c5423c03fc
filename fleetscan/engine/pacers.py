"""The pacers a scan's settings call for (issue 10): every call holds its source
address's budget (all APIs together) and its API's account pacer (shared by every
address), in that order (`fleetscan.pacing.CompositePacer`).

So the single default is min(482, 270) = 270 calls/s from one address, not the 300 at
which Alibaba blocks it, and batch is 96/s, just under the account's 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleetscan.engine.lanes import Session
from fleetscan.engine.settings import ScanSettings
from fleetscan.limits import Mode
from fleetscan.pacing import AccountPacer, AddressBudget, CompositePacer

__all__ = ["Route", "account_pacer", "default_pacer", "lane_pacers"]


@dataclass(frozen=True, slots=True)
class Route:
    """One source address of a scan: the client whose calls leave from it and its
    budget (on that client's session at the wire: `AddressBudget.trace_config`)."""

    client: Session
    budget: AddressBudget


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
