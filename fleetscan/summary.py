"""What a scan did and what it cost: the counters it keeps and the summary it ends with.

The summary goes to stderr as text and, with ``--summary``, to a file as one JSON
document; never into the record stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from fleetscan.estimate import TPS_SHARE_WARNING
from fleetscan.records import rfc3339
from fleetscan.window import SlidingWindow

__all__ = ["LaneCounters", "ScanCounters", "ScanSummary"]


@dataclass(slots=True, kw_only=True)
class LaneCounters:
    """One lane's (one API's) attempts: what the emulator or the bill counts per API."""

    calls_sent: int = 0
    calls_succeeded: int = 0
    calls_throttled: int = 0
    # Attempts sent in the busiest sliding second (against the API's account limit).
    sent_peak: SlidingWindow = field(default_factory=SlidingWindow)

    def to_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls_sent,
            "billable": self.calls_succeeded,
            "peak_per_second": self.sent_peak.peak,
            "throttled": self.calls_throttled,
        }


@dataclass(slots=True, kw_only=True)
class ScanCounters:
    """Running counts, updated by the scanner as records and answers arrive."""

    read: int = 0
    unique: int = 0
    duplicates: int = 0
    # Read IDs another shard owns (--shard): skipped before dedup, never sent.
    other_shards: int = 0
    resumed: int = 0
    invalid: int = 0
    online: int = 0
    offline: int = 0
    errors: int = 0
    calls_sent: int = 0
    calls_succeeded: int = 0
    calls_throttled: int = 0
    calls_retried: int = 0
    calls_failed: int = 0
    # Failed attempts that timed out: the server may have answered, and billed, them.
    calls_timed_out: int = 0
    # IDs a batch answer said were offline, asked again in real time (--confirm-offline).
    calls_confirm: int = 0
    # Successful calls in the busiest sliding second: the scan's peak TPS.
    success_peak: SlidingWindow = field(default_factory=SlidingWindow)
    # Per API (lane), by the API's name.
    lanes: dict[str, LaneCounters] = field(default_factory=dict)
    # Per source address (--source-address), all APIs together.
    addresses: dict[str, LaneCounters] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """IDs with a record in this run."""
        return self.invalid + self.online + self.offline + self.errors


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanSummary:
    """The end-of-scan report (the ``--summary`` JSON document)."""

    mode: str
    api: str
    instance_id: str
    qps: float
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    ids_read: int
    ids_unique: int
    ids_duplicate: int
    ids_resumed: int
    ids_invalid: int
    ids_online: int
    ids_offline: int
    ids_error: int
    ids_not_scanned: int
    calls_sent: int
    calls_succeeded: int
    calls_throttled: int
    calls_retried: int
    calls_failed: int
    calls_timed_out: int
    calls_confirm: int
    billable_transactions: int
    average_tps: float
    peak_tps: int
    instance_tps: float | None
    instance_tps_share: float | None
    price_per_million: float | None
    estimated_cost: float | None
    outcome: str
    abort_reason: str | None = None
    warnings: tuple[str, ...] = ()
    # With --shard: which shard ("K/N"), a digest of its seed, and the read IDs that
    # belong to the other shards (skipped, never sent).
    shard: str | None = None
    shard_seed: str | None = None
    ids_other_shards: int = 0
    # Per API and per source address: calls, billable, peak per sliding second, throttled.
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)
    addresses: dict[str, dict[str, int]] = field(default_factory=dict)
    # With --limiter: permits spent, permits dropped (woken too late to spend them at
    # their slot), and round trips to Redis; None without.
    limiter: dict[str, int] | None = None

    @classmethod
    def build(
        cls,
        counters: ScanCounters,
        *,
        mode: str,
        api: str,
        instance_id: str,
        qps: float,
        started_at: datetime,
        ended_at: datetime,
        duration_seconds: float,
        not_scanned: int,
        instance_tps: float | None,
        price_per_million: float | None,
        outcome: str,
        abort_reason: str | None = None,
        warnings: tuple[str, ...] = (),
        shard: str | None = None,
        shard_seed: str | None = None,
        limiter: dict[str, int] | None = None,
    ) -> ScanSummary:
        billable = counters.calls_succeeded
        peak = counters.success_peak.peak
        share = peak / instance_tps if instance_tps else None
        notes = list(warnings)
        if share is not None and share > TPS_SHARE_WARNING:
            notes.append(
                f"the scan used {share:.0%} of the instance's {instance_tps:g} TPS at its peak;"
                " past the spec, devices see disconnections, timeouts and message discards"
            )
        return cls(
            mode=mode,
            api=api,
            instance_id=instance_id,
            qps=qps,
            started_at=started_at,
            ended_at=ended_at,
            duration_seconds=round(duration_seconds, 3),
            ids_read=counters.read,
            ids_unique=counters.unique,
            ids_duplicate=counters.duplicates,
            ids_resumed=counters.resumed,
            ids_invalid=counters.invalid,
            ids_online=counters.online,
            ids_offline=counters.offline,
            ids_error=counters.errors,
            ids_not_scanned=not_scanned,
            calls_sent=counters.calls_sent,
            calls_succeeded=counters.calls_succeeded,
            calls_throttled=counters.calls_throttled,
            calls_retried=counters.calls_retried,
            calls_failed=counters.calls_failed,
            calls_timed_out=counters.calls_timed_out,
            calls_confirm=counters.calls_confirm,
            billable_transactions=billable,
            # Over one second at least: the peak is the most in any one second, and a
            # sub-second scan's rate per second of its length would exceed it.
            average_tps=round(billable / max(duration_seconds, 1.0), 2) if billable else 0.0,
            peak_tps=peak,
            instance_tps=instance_tps,
            instance_tps_share=round(share, 4) if share is not None else None,
            price_per_million=price_per_million,
            estimated_cost=(
                round(billable * price_per_million / 1e6, 6)
                if price_per_million is not None
                else None
            ),
            outcome=outcome,
            abort_reason=abort_reason,
            warnings=tuple(notes),
            shard=shard,
            shard_seed=shard_seed,
            ids_other_shards=counters.other_shards,
            lanes={api: lane.to_dict() for api, lane in counters.lanes.items()},
            addresses={ip: part.to_dict() for ip, part in counters.addresses.items()},
            limiter=limiter,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = rfc3339(self.started_at)
        data["ended_at"] = rfc3339(self.ended_at)
        data["warnings"] = list(self.warnings)
        return data

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    def to_text(self) -> str:
        lines = [
            f"fleetscan: {self.outcome} — {self.mode} mode ({self.api}), "
            f"instance {self.instance_id}, {self.qps:g} calls/s",
            f"  IDs       read {self.ids_read}, unique {self.ids_unique}, "
            f"duplicates {self.ids_duplicate}, invalid {self.ids_invalid}"
            + (f", carried over {self.ids_resumed}" if self.ids_resumed else "")
            + (
                f", shard {self.shard} (other shards' {self.ids_other_shards})"
                if self.shard is not None
                else ""
            ),
            f"  records   online {self.ids_online}, offline {self.ids_offline}, "
            f"error {self.ids_error}"
            + (f", not scanned {self.ids_not_scanned}" if self.ids_not_scanned else ""),
            f"  attempts  sent {self.calls_sent}, succeeded {self.calls_succeeded}, "
            f"throttled {self.calls_throttled}, retried {self.calls_retried}, "
            f"failed {self.calls_failed}"
            + (
                f" (timed out {self.calls_timed_out}: the server may have billed these too)"
                if self.calls_timed_out
                else ""
            ),
            *(
                [f"  confirmed {self.calls_confirm} batch-offline IDs asked again in real time"]
                if self.calls_confirm
                else []
            ),
            f"  billing   {self.billable_transactions} transactions in "
            f"{self.duration_seconds:.1f} s; average {self.average_tps:g} TPS, "
            f"peak {self.peak_tps} TPS"
            + (
                f" ({self.instance_tps_share:.1%} of the instance's {self.instance_tps:g} TPS)"
                if self.instance_tps_share is not None and self.instance_tps
                else ""
            )
            + (
                f"; estimated cost {self.estimated_cost:.6g}"
                if self.estimated_cost is not None
                else ""
            ),
            *(
                f"  {kind:<9} {name}: calls {part['calls']}, billable {part['billable']}, "
                f"peak {part['peak_per_second']}/s, throttled {part['throttled']}"
                for kind, parts in (("api", self.lanes), ("address", self.addresses))
                if len(parts) > 1
                for name, part in parts.items()
            ),
            *(
                [
                    f"  limiter   {self.limiter['permits']} permits, "
                    f"{self.limiter['dropped']} dropped (woken too late for their slot), "
                    f"{self.limiter['round_trips']} round trips to Redis"
                ]
                if self.limiter is not None
                else []
            ),
            f"  time      {rfc3339(self.started_at)} .. {rfc3339(self.ended_at)}",
        ]
        if self.abort_reason:
            lines.append(f"  stopped   {self.abort_reason}")
        lines.extend(f"  warning   {w}" for w in self.warnings)
        return "\n".join(lines) + "\n"
