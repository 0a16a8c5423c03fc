"""What the emulator saw: counters per action and per source IP, and per client ID.

Kept outside the API path (``GET /_emulator/stats``, ``emu.stats()``) so tests can
check a client's behaviour: how many calls it made and how many were billable
(successes), the most requests and successes in any sliding one-second window, and
how often each client ID was queried (reached the service) and answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fleetscan.emulator.config import ACTIONS
from fleetscan.window import SlidingWindow

__all__ = [
    "UNSUPPORTED",
    "ActionCounters",
    "ActionStats",
    "IpStats",
    "Stats",
    "StatsSnapshot",
]

# Where requests for an action the service does not have are counted.
UNSUPPORTED = "(unsupported)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionStats:
    """Counters of one action. ``successes`` are the billable transactions."""

    requests: int = 0
    successes: int = 0
    throttled: int = 0
    blocked: int = 0
    faulted: int = 0
    dropped: int = 0
    rejected: int = 0
    ids_answered: int = 0
    max_requests_1s: int = 0
    max_successes_1s: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class IpStats:
    """Counters of one action from one source IP."""

    requests: int = 0
    successes: int = 0
    max_requests_1s: int = 0
    max_successes_1s: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSnapshot:
    """A copy of the counters at one moment.

    ``actions`` has both API actions (and `UNSUPPORTED` once seen); ``ips`` maps
    source IP to action to `IpStats`, and ``ip_totals`` source IP to `IpStats` of
    every request from it, all APIs together (what the per-IP limit counts by
    default, peak per sliding second included); ``client_id_queries`` counts the calls whose
    parameters reached the service, per ID (single and batch), and
    ``client_id_answers`` the successful answers that carried each ID.
    """

    actions: Mapping[str, ActionStats]
    ips: Mapping[str, Mapping[str, IpStats]]
    ip_totals: Mapping[str, IpStats]
    client_id_queries: Mapping[str, int]
    client_id_answers: Mapping[str, int]

    @property
    def requests(self) -> int:
        """Every request on the API path."""
        return sum(a.requests for a in self.actions.values())

    @property
    def successes(self) -> int:
        """Successful calls: the billable transactions."""
        return sum(a.successes for a in self.actions.values())

    def requeried(self) -> list[str]:
        """Client IDs that reached the service more than once, sorted."""
        return sorted(cid for cid, n in self.client_id_queries.items() if n > 1)

    def as_dict(self, *, client_ids: bool = True) -> dict[str, Any]:
        """JSON-ready data, as ``GET /_emulator/stats`` serves it."""
        data: dict[str, Any] = {
            "requests": self.requests,
            "successes": self.successes,
            "actions": {name: asdict(a) for name, a in self.actions.items()},
            "ips": {
                ip: {name: asdict(s) for name, s in per.items()} for ip, per in self.ips.items()
            },
            "ip_totals": {ip: asdict(s) for ip, s in self.ip_totals.items()},
        }
        if client_ids:
            data["client_id_queries"] = dict(self.client_id_queries)
            data["client_id_answers"] = dict(self.client_id_answers)
        return data


class ActionCounters:
    """Live counters of one action (mutated on the request path)."""

    __slots__ = (
        "blocked",
        "dropped",
        "faulted",
        "ids_answered",
        "rejected",
        "request_window",
        "requests",
        "success_window",
        "successes",
        "throttled",
    )

    def __init__(self) -> None:
        self.requests = self.successes = self.throttled = self.blocked = 0
        self.faulted = self.dropped = self.rejected = self.ids_answered = 0
        self.request_window = SlidingWindow()
        self.success_window = SlidingWindow()

    def freeze(self) -> ActionStats:
        return ActionStats(
            requests=self.requests,
            successes=self.successes,
            throttled=self.throttled,
            blocked=self.blocked,
            faulted=self.faulted,
            dropped=self.dropped,
            rejected=self.rejected,
            ids_answered=self.ids_answered,
            max_requests_1s=self.request_window.peak,
            max_successes_1s=self.success_window.peak,
        )


class _IpCounters:
    __slots__ = ("request_window", "requests", "success_window", "successes")

    def __init__(self) -> None:
        self.requests = self.successes = 0
        self.request_window = SlidingWindow()
        self.success_window = SlidingWindow()

    def freeze(self) -> IpStats:
        return IpStats(
            requests=self.requests,
            successes=self.successes,
            max_requests_1s=self.request_window.peak,
            max_successes_1s=self.success_window.peak,
        )


class Stats:
    """The live counters. Not thread-safe: touch them on the emulator's loop."""

    __slots__ = ("_actions", "_answers", "_count_ids", "_ip_totals", "_ips", "_queries")

    def __init__(self, *, count_client_ids: bool = True) -> None:
        self._count_ids = count_client_ids
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self._actions: dict[str, ActionCounters] = {a: ActionCounters() for a in ACTIONS}
        self._ips: dict[tuple[str, str], _IpCounters] = {}
        # Source IP -> its requests of every action together.
        self._ip_totals: dict[str, _IpCounters] = {}
        self._queries: dict[str, int] = {}
        self._answers: dict[str, int] = {}

    def request(self, action: str, ip: str, now: float) -> ActionCounters:
        """Count an arriving request; returns its action's counters."""
        counters = self._actions.get(action)
        if counters is None:
            action = UNSUPPORTED
            counters = self._actions.get(action) or self._actions.setdefault(
                action, ActionCounters()
            )
        counters.requests += 1
        counters.request_window.add(now)
        per_ip = self._ips.get((ip, action))
        if per_ip is None:
            per_ip = self._ips[ip, action] = _IpCounters()
        per_ip.requests += 1
        per_ip.request_window.add(now)
        total = self._ip_totals.get(ip)
        if total is None:
            total = self._ip_totals[ip] = _IpCounters()
        total.requests += 1
        total.request_window.add(now)
        return counters

    def success(self, counters: ActionCounters, action: str, ip: str, now: float, ids: int) -> None:
        """Count a successful (billable) answer carrying ``ids`` client IDs."""
        counters.successes += 1
        counters.ids_answered += ids
        counters.success_window.add(now)
        per_ip = self._ips[ip, action]
        per_ip.successes += 1
        per_ip.success_window.add(now)
        total = self._ip_totals[ip]
        total.successes += 1
        total.success_window.add(now)

    def queried(self, client_ids: Iterable[str]) -> None:
        """Count client IDs whose query reached the service."""
        if self._count_ids:
            queries = self._queries
            for cid in client_ids:
                queries[cid] = queries.get(cid, 0) + 1

    def answered(self, client_ids: Iterable[str]) -> None:
        """Count client IDs carried by a successful answer."""
        if self._count_ids:
            answers = self._answers
            for cid in client_ids:
                answers[cid] = answers.get(cid, 0) + 1

    def snapshot(self) -> StatsSnapshot:
        """A frozen copy of every counter."""
        ips: dict[str, dict[str, IpStats]] = {}
        for (ip, action), counters in self._ips.items():
            ips.setdefault(ip, {})[action] = counters.freeze()
        return StatsSnapshot(
            actions={name: c.freeze() for name, c in self._actions.items()},
            ips=ips,
            ip_totals={ip: counters.freeze() for ip, counters in self._ip_totals.items()},
            client_id_queries=dict(self._queries),
            client_id_answers=dict(self._answers),
        )
