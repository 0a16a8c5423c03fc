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
    "default_pacer",
    "lane_pacers",
    "shared_lane_pacers",
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


def shared_rates(settings: ScanSettings) -> dict[Mode, float]:
    """Each lane's API rate on a shared budget (``--limiter``): the account's, spent
    by every process together. One lane: the settings' API rate (``--qps`` or the
    pace). Two lanes: batch at its lane's rate, single at the account's single pace,
    not at what this process's addresses leave it: other processes send from other
    addresses, and together they may use the whole account."""
    rates = settings.lane_rates
    if not settings.two_lanes:
        return dict(rates)
    return {"batch": rates["batch"], "single": float(ACCOUNT_PACE["single"])}


def shared_lane_pacers(
    settings: ScanSettings, shared: Mapping[str, Mapping[Mode, Pacer]]
) -> dict[str, dict[Mode, Pacer]]:
    """Each address's lane pacers on the shared budget (``shared``: the budget's pacer
    per address and lane API, at `shared_rates`).

    One lane: the shared pacer alone. Two lanes: each also capped, in this process,
    at its lane's rate (`ScanSettings.lane_rates`: what this process's address budgets
    leave the single lane beside batch), one cap per lane shared by the addresses. So
    the single lane, whose shared rate is the account's, never takes the batch lane's
    part of an address budget, as `fleetscan.pacing.lane_rates` explains. The caps
    do not adapt: a throttled answer lowers the shared rate of every process.
    """
    if not settings.two_lanes:
        return {address: dict(pacers) for address, pacers in shared.items()}
    caps = {
        mode: AccountPacer(mode, rate, adaptive=False) for mode, rate in settings.lane_rates.items()
    }
    return {
        address: {mode: CompositePacer(caps[mode], pacers[mode]) for mode in caps}
        for address, pacers in shared.items()
    }
