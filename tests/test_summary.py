"""The scan's counters and summary: peak TPS over sliding seconds, the numbers derived
from the counters, the TPS-share warning, and the JSON and text renderings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from fleetscan.estimate import TPS_SHARE_WARNING
from fleetscan.summary import ScanCounters, ScanSummary

START = datetime(2026, 11, 25, 18, 0, 0, 123456, tzinfo=UTC)


def summary(
    c: ScanCounters | None = None,
    *,
    duration: float = 10.0,
    instance_tps: float | None = None,
    price: float | None = None,
    **overrides: object,
) -> ScanSummary:
    options: dict[str, object] = {
        "mode": "single",
        "api": "QuerySessionByClientId",
        "instance_id": "mqtt-cn-x",
        "qps": 300.0,
        "started_at": START,
        "ended_at": START + timedelta(seconds=duration),
        "duration_seconds": duration,
        "not_scanned": 0,
        "instance_tps": instance_tps,
        "price_per_million": price,
        "outcome": "completed",
    }
    options.update(overrides)
    return ScanSummary.build(c if c is not None else ScanCounters(), **options)  # type: ignore[arg-type]


# --- peak TPS ---------------------------------------------------------------------------------


def peak_of(times: list[float]) -> int:
    c = ScanCounters()
    for t in times:
        c.success_peak.add(t)
    return c.success_peak.peak


def test_peak_counts_the_busiest_sliding_second_not_calendar_seconds() -> None:
    # 5 late in one second and 5 early in the next: no calendar second holds more
    # than 5, the window (0.5, 1.5] holds all 10.
    assert peak_of([0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.1, 1.2, 1.3, 1.4]) == 10


def test_a_window_is_open_at_its_start_and_closed_at_its_end() -> None:
    # 0.0 and 1.0 are a second apart: never in one window (s, s + 1].
    assert peak_of([0.0, 1.0, 2.0, 3.0]) == 1
    assert peak_of([0.0, 0.999, 1.998]) == 2


def test_a_burst_at_one_instant_counts_whole() -> None:
    assert peak_of([5.0] * 7 + [9.0]) == 7


def test_the_peak_is_kept_after_the_rate_drops() -> None:
    times = [i * 0.01 for i in range(50)] + [10.0 + i for i in range(20)]
    assert peak_of(times) == 50


def test_no_successes_no_peak() -> None:
    assert peak_of([]) == 0


# --- numbers ------------------------------------------------------------------------------------


def test_build_copies_the_counters_into_the_documented_fields() -> None:
    c = ScanCounters(
        read=120,
        unique=100,
        duplicates=20,
        resumed=7,
        invalid=3,
        online=40,
        offline=50,
        errors=2,
        calls_sent=110,
        calls_succeeded=95,
        calls_throttled=6,
        calls_retried=15,
        calls_failed=15,
    )
    for t in (0.1, 0.2, 0.3, 2.0):
        c.success_peak.add(t)
    s = summary(c, duration=4.0, not_scanned=5, abort_reason=None)
    assert (s.ids_read, s.ids_unique, s.ids_duplicate, s.ids_resumed) == (120, 100, 20, 7)
    assert (s.ids_invalid, s.ids_online, s.ids_offline, s.ids_error) == (3, 40, 50, 2)
    assert s.ids_not_scanned == 5
    assert (s.calls_sent, s.calls_succeeded, s.calls_throttled) == (110, 95, 6)
    assert (s.calls_retried, s.calls_failed) == (15, 15)
    # Billable: successful calls, batch calls included, nothing else.
    assert s.billable_transactions == 95
    assert s.average_tps == 23.75
    assert s.peak_tps == 3
    assert c.done == 3 + 40 + 50 + 2


def test_average_tps_of_an_instant_scan_is_no_division_error_and_never_above_the_peak() -> None:
    assert summary(ScanCounters(), duration=0.0).average_tps == 0.0
    # 3 calls in 0.2 s: 3 in that second, not "15 TPS" beside a peak of 3.
    c = ScanCounters(calls_succeeded=3)
    for t in (0.0, 0.1, 0.2):
        c.success_peak.add(t)
    for duration in (0.0, 0.2):
        s = summary(c, duration=duration)
        assert s.average_tps == 3.0 == s.peak_tps


def test_cost_and_share_only_when_asked_for() -> None:
    c = ScanCounters(calls_succeeded=2_000_000)
    for _ in range(120):
        c.success_peak.add(1.0)
    plain = summary(c)
    assert (plain.instance_tps, plain.instance_tps_share) == (None, None)
    assert (plain.price_per_million, plain.estimated_cost) == (None, None)
    priced = summary(c, instance_tps=1000, price=2.5)
    assert priced.estimated_cost == 5.0
    assert priced.instance_tps_share == 0.12
    assert summary(c, price=0.0).estimated_cost == 0.0


@pytest.mark.parametrize(
    ("peak", "instance_tps", "warned"),
    [(50, 100, False), (51, 100, True), (300, 100, True), (10, 1000, False)],
)
def test_a_peak_above_half_the_instance_tps_warns(
    peak: int, instance_tps: float, warned: bool
) -> None:
    assert TPS_SHARE_WARNING == 0.5
    c = ScanCounters(calls_succeeded=peak)
    for _ in range(peak):
        c.success_peak.add(3.0)
    s = summary(c, instance_tps=instance_tps, warnings=("earlier note",))
    assert s.warnings[0] == "earlier note"
    tps_notes = [w for w in s.warnings if "of the instance's" in w]
    assert bool(tps_notes) is warned
    if warned:
        assert f"{peak / instance_tps:.0%}" in tps_notes[0]
        assert "disconnections" in tps_notes[0]


# --- rendering -----------------------------------------------------------------------------------


def test_json_has_every_field_with_rfc3339_times() -> None:
    s = summary(ScanCounters(calls_succeeded=4), instance_tps=100, price=1.0, warnings=("w",))
    data = orjson.loads(s.to_json())
    assert list(data) == [f.name for f in dataclasses.fields(ScanSummary)]
    assert data["started_at"] == "2026-11-25T18:00:00.123Z"
    assert data["ended_at"] == "2026-11-25T18:00:10.123Z"
    assert data["warnings"] == ["w"]
    assert data == s.to_dict()
    assert s.to_json().endswith(b"}\n")


def test_json_of_an_aborted_scan_says_why() -> None:
    s = summary(outcome="aborted", abort_reason="InstanceNotFound (HTTP 400): gone")
    data = s.to_dict()
    assert (data["outcome"], data["abort_reason"]) == (
        "aborted",
        "InstanceNotFound (HTTP 400): gone",
    )
    assert data["instance_tps"] is None
    assert data["estimated_cost"] is None


def test_text_shows_the_numbers_and_only_the_parts_that_apply() -> None:
    c = ScanCounters(
        read=12,
        unique=10,
        duplicates=2,
        online=4,
        offline=5,
        invalid=1,
        calls_sent=11,
        calls_succeeded=9,
        calls_throttled=1,
        calls_retried=2,
        calls_failed=2,
    )
    c.success_peak.add(0.5)
    plain = summary(c, duration=2.0).to_text()
    assert plain.startswith(
        "fleetscan: completed — single mode (QuerySessionByClientId), instance mqtt-cn-x, "
        "300 calls/s\n"
    )
    assert "read 12, unique 10, duplicates 2, invalid 1\n" in plain
    # Records say "error" (IDs), attempts say "failed" (HTTP attempts): never mixed up.
    assert "  records   online 4, offline 5, error 0\n" in plain
    assert "  attempts  sent 11, succeeded 9, throttled 1, retried 2, failed 2\n" in plain
    assert "9 transactions in 2.0 s; average 4.5 TPS, peak 1 TPS\n" in plain
    assert "2026-11-25T18:00:00.123Z .. 2026-11-25T18:00:02.123Z" in plain
    for absent in (
        "carried over",
        "not scanned",
        "timed out",
        "of the instance",
        "cost",
        "stopped",
        "warning",
    ):
        assert absent not in plain
    timed_out = summary(dataclasses.replace(c, calls_timed_out=1), duration=2.0)
    assert "failed 2 (timed out 1: the server may have billed these too)\n" in (timed_out.to_text())
    assert timed_out.to_dict()["calls_timed_out"] == 1
    full = summary(
        dataclasses.replace(c, resumed=30),
        duration=2.0,
        instance_tps=1.5,
        price=10.0,
        not_scanned=3,
        outcome="aborted",
        abort_reason="InvalidAccessKeyId.Inactive (HTTP 400): disabled",
    ).to_text()
    assert full.startswith("fleetscan: aborted — ")
    assert ", carried over 30\n" in full
    assert ", not scanned 3\n" in full
    assert "peak 1 TPS (66.7% of the instance's 1.5 TPS); estimated cost 9e-05\n" in full
    assert "  stopped   InvalidAccessKeyId.Inactive (HTTP 400): disabled\n" in full
    assert "  warning   the scan used 67% of the instance's 1.5 TPS" in full
    assert full.endswith("\n")
