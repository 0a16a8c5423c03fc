"""What a scan will cost before it runs: calls, transactions, time, TPS, money.

Pure arithmetic on numbers the caller supplies (``onsmqtt-api.md`` section 5):
every successful call is one messaging transaction, batch calls included, whatever
the number of IDs in them. A subscription instance pays nothing per call but the
scan's rate comes out of the instance's purchased TPS spec; past the spec, devices
see disconnections, response timeouts and message discards. Pay-as-you-go
instances pay per transaction at a regional price only the user knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleetscan.errors import UsageError
from fleetscan.limits import BATCH_SIZE, MODES, Mode

__all__ = [
    "DEFAULT_OFFLINE_SHARE",
    "STALE_BATCH_NOTE",
    "TPS_SHARE_WARNING",
    "Forecast",
    "OfflineShare",
    "forecast",
    "forecast_lanes",
    "format_duration",
    "render_forecasts",
]

# The share of IDs a batch answer says are offline, for --confirm-offline's forecast.
DEFAULT_OFFLINE_SHARE = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class OfflineShare:
    """The offline share a --confirm-offline forecast assumes, and where it came from.

    ``source`` is the scan output it was counted from (``records``: its online and
    offline records), or None: given (``given``) or the default.
    """

    value: float = DEFAULT_OFFLINE_SHARE
    source: str | None = None
    records: int = 0
    given: bool = False

    @classmethod
    def of_records(
        cls, *, source: str, online: int, offline: int, confirmed_online: int = 0
    ) -> OfflineShare:
        """The share a previous scan's records show: the IDs the batch found offline
        (``offline``, and ``confirmed_online``: said offline by the batch, online in
        real time) among its ``online`` + ``offline`` records; the default when none.

        >>> OfflineShare.of_records(source="last.ndjson", online=69, offline=31).describe()
        'offline share 0.31, from last.ndjson (100 records)'
        """
        records = online + offline
        if records == 0:
            return cls(source=source)
        return cls(value=(offline + confirmed_online) / records, source=source, records=records)

    def describe(self) -> str:
        """One line for the estimate's output: the share and where it came from."""
        shown = f"offline share {self.value:.3g}"
        if self.given:
            return f"{shown}, from --offline-share"
        if self.source is None:
            return f"{shown}, assumed"
        if self.records == 0:
            return f"{shown}, assumed: {self.source} holds no online or offline record"
        return f"{shown}, from {self.source} ({self.records:,} records)"


# Above this share of the instance's TPS spec, the forecast warns.
TPS_SHARE_WARNING = 0.5

STALE_BATCH_NOTE = (
    "batch answers come from a server-side cache and may be stale; "
    "single queries (QuerySessionByClientId) are real time"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecast:
    """The cost of checking ``ids`` unique valid client IDs in one ``mode``.

    ``tps_share`` and ``cost`` are None when the instance's TPS spec or the price per
    million transactions was not given.
    """

    # ``single``, ``batch``, or two lanes: ``hybrid``, ``batch+confirm``, ``hybrid+confirm``.
    mode: str
    ids: int
    calls: int
    transactions: int
    qps: float
    duration_s: float
    instance_tps: float | None = None
    tps_share: float | None = None
    price_per_million: float | None = None
    cost: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ids_per_second(self) -> float:
        return self.ids / self.duration_s if self.duration_s > 0 else 0.0


def forecast_lanes(
    ids: int,
    *,
    batch_rate: float,
    single_rate: float,
    hybrid: bool,
    confirm: bool,
    offline_share: float = DEFAULT_OFFLINE_SHARE,
    instance_tps: float | None = None,
    price_per_million: float | None = None,
) -> Forecast:
    """Forecast a scan with a batch lane at ``batch_rate`` calls/s beside single calls
    at ``single_rate``: hybrid's single lane (``hybrid``), --confirm-offline's
    confirmations of an ``offline_share`` of the batch's IDs (``confirm``), or both.

    The batch lane waits for its confirmations, so it goes at most as fast as the single
    calls can confirm; hybrid's single lane takes what the confirmations leave.

    >>> f = forecast_lanes(11_340, batch_rate=96, single_rate=174, hybrid=True, confirm=False)
    >>> (f.calls, round(f.ids_per_second))
    (2700, 1134)
    >>> round(forecast_lanes(8_700, batch_rate=96, single_rate=174, hybrid=True,
    ...     confirm=True).ids_per_second)
    870
    """
    if not confirm and not hybrid:
        raise UsageError("two lanes need hybrid, --confirm-offline, or both")
    if not 0.0 <= offline_share <= 1.0:
        raise UsageError(f"--offline-share {offline_share:g}: a share within 0..1")
    if not batch_rate > 0 or not single_rate > 0:
        raise UsageError("each lane's rate must be positive")
    share = offline_share if confirm else 0.0
    # Batch calls/s the confirmations allow: each carries BATCH_SIZE*share of them.
    batch = batch_rate if share == 0 else min(batch_rate, single_rate / (BATCH_SIZE * share))
    spare = (single_rate - BATCH_SIZE * share * batch) if hybrid else 0.0
    ids_per_s = BATCH_SIZE * batch + spare
    duration = ids / ids_per_s
    by_batch = ids * (BATCH_SIZE * batch / ids_per_s)
    calls = math.ceil(by_batch / BATCH_SIZE) + round(ids - by_batch) + round(by_batch * share)
    qps = batch + (BATCH_SIZE * share * batch + spare)
    base = forecast(
        ids, mode="single", qps=qps, instance_tps=instance_tps, price_per_million=price_per_million
    )
    label = ("hybrid" if hybrid else "batch") + ("+confirm" if confirm else "")
    return Forecast(
        mode=label,
        ids=ids,
        calls=calls,
        transactions=calls,
        qps=round(qps, 1),
        duration_s=duration,
        instance_tps=instance_tps,
        tps_share=base.tps_share,
        price_per_million=price_per_million,
        cost=None if price_per_million is None else calls * price_per_million / 1e6,
        warnings=base.warnings,
    )


def forecast(
    ids: int,
    *,
    mode: Mode,
    qps: float,
    instance_tps: float | None = None,
    price_per_million: float | None = None,
) -> Forecast:
    """Forecast a scan of ``ids`` unique valid IDs at ``qps`` calls per second.

    >>> f = forecast(25, mode="batch", qps=2, instance_tps=5)
    >>> (f.calls, f.transactions, f.duration_s, f.tps_share)
    (3, 3, 1.5, 0.4)
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}")
    if ids < 0:
        raise UsageError(f"the number of IDs cannot be negative ({ids})")
    if not qps > 0 or math.isinf(qps):
        raise UsageError(f"the call rate must be a positive number of calls/s ({qps})")
    if instance_tps is not None and not instance_tps > 0:
        raise UsageError(f"the instance TPS spec must be positive ({instance_tps})")
    if price_per_million is not None and not price_per_million >= 0:
        raise UsageError(
            f"the price per million transactions cannot be negative ({price_per_million})"
        )
    calls = ids if mode == "single" else -(-ids // BATCH_SIZE)
    share = None if instance_tps is None else qps / instance_tps
    warnings: list[str] = []
    if share is not None and share > TPS_SHARE_WARNING:
        warnings.append(
            f"the scan adds {qps:g} TPS, {share:.0%} of the instance's {instance_tps:g} TPS "
            "spec: past the spec, devices may see disconnections, response timeouts and "
            "message discards; lower the rate or scan off-peak"
        )
    return Forecast(
        mode=mode,
        ids=ids,
        calls=calls,
        transactions=calls,
        qps=qps,
        duration_s=calls / qps,
        instance_tps=instance_tps,
        tps_share=share,
        price_per_million=price_per_million,
        cost=None if price_per_million is None else calls * price_per_million / 1e6,
        warnings=tuple(warnings),
    )


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1h 2m 6s"``, ``3600`` -> ``"1h"``; under a minute, one decimal."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = math.ceil(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    while parts[0][0] == 0:
        parts.pop(0)
    while parts[-1][0] == 0:
        parts.pop()
    return " ".join(f"{value}{unit}" for value, unit in parts)


def render_forecasts(forecasts: list[Forecast] | tuple[Forecast, ...]) -> str:
    """Side-by-side human text for one or more forecasts (usually single and batch)."""
    if not forecasts:
        return ""
    rows: list[tuple[str, list[str]]] = [
        ("mode", [f.mode for f in forecasts]),
        ("unique valid IDs", [f"{f.ids:,}" for f in forecasts]),
        ("API calls", [f"{f.calls:,}" for f in forecasts]),
        ("transactions", [f"{f.transactions:,}" for f in forecasts]),
        ("rate (calls/s = added TPS)", [f"{f.qps:g}" for f in forecasts]),
        ("IDs/s", [f"{f.ids_per_second:,.0f}" for f in forecasts]),
        ("duration", [format_duration(f.duration_s) for f in forecasts]),
    ]
    if any(f.tps_share is not None for f in forecasts):
        rows.append(("share of instance TPS spec", [_share(f) for f in forecasts]))
    if any(f.cost is not None for f in forecasts):
        rows.append(("cost (pay-as-you-go)", [_cost(f) for f in forecasts]))
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(values[i]) for _, values in rows) for i in range(len(forecasts))]
    lines = [
        "  ".join(
            [label.ljust(label_width), *(v.rjust(w) for v, w in zip(values, widths, strict=True))]
        )
        for label, values in rows
    ]
    notes = [f"warning ({f.mode}): {w}" for f in forecasts for w in f.warnings]
    if any(f.mode.startswith(("batch", "hybrid")) for f in forecasts):
        notes.append(f"note: {STALE_BATCH_NOTE}")
    notes.append(
        "note: only successful calls count as transactions; this assumes each succeeds once"
    )
    return "\n".join(lines + notes) + "\n"


def _share(f: Forecast) -> str:
    return "-" if f.tps_share is None else f"{f.tps_share:.1%}"


def _cost(f: Forecast) -> str:
    if f.cost is None:
        return "-"
    # Small sums keep three significant digits: 0.0000 hid a cost of 0.00002.
    if f.cost == 0 or f.cost >= 0.001:
        return f"{f.cost:,.4f}"
    return f"{f.cost:.{2 - math.floor(math.log10(f.cost))}f}"
