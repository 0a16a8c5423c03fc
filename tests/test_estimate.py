"""The forecast: calls, transactions, duration, TPS share and cost."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fleetscan.estimate
from fleetscan.errors import UsageError
from fleetscan.estimate import (
    STALE_BATCH_NOTE,
    Forecast,
    forecast,
    format_duration,
    render_forecasts,
)


def test_single_mode_one_call_per_id() -> None:
    f = forecast(1_000, mode="single", qps=250)
    assert f.mode == "single"
    assert (f.ids, f.calls, f.transactions) == (1_000, 1_000, 1_000)
    assert f.duration_s == 4.0
    assert f.tps_share is None
    assert f.cost is None
    assert f.warnings == ()


@pytest.mark.parametrize(
    ("ids", "calls"), [(0, 0), (1, 1), (9, 1), (10, 1), (11, 2), (25, 3), (10_000_001, 1_000_001)]
)
def test_batch_mode_rounds_calls_up(ids: int, calls: int) -> None:
    f = forecast(ids, mode="batch", qps=100)
    assert f.calls == calls
    # Each batch call is one transaction, however many IDs it carries.
    assert f.transactions == calls
    assert f.duration_s == calls / 100


def test_tps_share_and_cost() -> None:
    f = forecast(2_000_000, mode="single", qps=300, instance_tps=1_000, price_per_million=1.5)
    assert f.tps_share == pytest.approx(0.3)
    assert f.cost == pytest.approx(3.0)
    assert f.warnings == ()


def test_warns_past_half_the_tps_spec() -> None:
    assert forecast(10, mode="single", qps=50, instance_tps=100).warnings == ()
    (warning,) = forecast(10, mode="single", qps=51, instance_tps=100).warnings
    assert "51%" in warning
    assert "disconnections" in warning
    assert "message discards" in warning


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ids": -1, "qps": 1},
        {"ids": 1, "qps": 0},
        {"ids": 1, "qps": float("nan")},
        {"ids": 1, "qps": float("inf")},
        {"ids": 1, "qps": 1, "instance_tps": 0},
        {"ids": 1, "qps": 1, "price_per_million": -1},
    ],
)
def test_rejects_nonsense(kwargs: dict[str, float]) -> None:
    ids = int(kwargs.pop("ids"))
    with pytest.raises(UsageError):
        forecast(ids, mode="single", **kwargs)


def test_rejects_unknown_mode() -> None:
    with pytest.raises(UsageError, match="turbo"):
        forecast(1, mode="turbo", qps=1)  # type: ignore[arg-type]


@given(ids=st.integers(0, 10**9), qps=st.floats(0.1, 1_000))
def test_batch_is_never_more_than_a_tenth_plus_one(ids: int, qps: float) -> None:
    single = forecast(ids, mode="single", qps=qps)
    batch = forecast(ids, mode="batch", qps=qps)
    assert batch.calls * 10 >= ids
    assert batch.calls * 10 < ids + 10
    assert single.calls == ids
    assert batch.duration_s <= single.duration_s


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0s"), (12.34, "12.3s"), (60, "1m"), (3725.2, "1h 2m 6s"), (90000, "1d 1h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_render_side_by_side() -> None:
    single = forecast(10_000_000, mode="single", qps=300, instance_tps=500, price_per_million=2)
    batch = forecast(10_000_000, mode="batch", qps=100, instance_tps=500, price_per_million=2)
    text = render_forecasts([single, batch])
    lines = text.splitlines()
    assert lines[0].split() == ["mode", "single", "batch"]
    assert lines[2].split()[-2:] == ["10,000,000", "1,000,000"]
    assert "9h 15m 34s" in text
    assert "2h 46m 40s" in text
    assert "60.0%" in text
    assert "20.0%" in text
    assert "20.0000" in text
    assert "2.0000" in text
    assert "warning (single)" in text
    assert "warning (batch)" not in text
    assert STALE_BATCH_NOTE in text


def test_a_small_cost_keeps_its_significant_digits() -> None:
    tiny = forecast(226, mode="single", qps=300, price_per_million=0.1)
    text = render_forecasts([tiny])
    assert "0.0000226" in text
    assert "0.0000 " not in text


def test_render_without_optional_numbers_or_batch() -> None:
    text = render_forecasts([forecast(5, mode="single", qps=1)])
    assert "share of instance" not in text
    assert "cost" not in text
    assert "stale" not in text
    assert render_forecasts([]) == ""


def test_forecast_is_a_frozen_value() -> None:
    f = forecast(1, mode="single", qps=1)
    assert isinstance(f, Forecast)
    with pytest.raises(AttributeError):
        f.calls = 2  # type: ignore[misc]


def test_doctests() -> None:
    assert doctest.testmod(fleetscan.estimate).failed == 0


def test_two_lane_forecasts_follow_the_lane_rates() -> None:
    from fleetscan.estimate import forecast_lanes

    one = {"batch_rate": 96.0, "single_rate": 174.0}
    hybrid = forecast_lanes(113_400, hybrid=True, confirm=False, **one)
    assert round(hybrid.ids_per_second) == 1134
    assert hybrid.calls == 9_600 + 17_400
    # One address, 20% offline: the confirmations (2 a batch call) take all 174/s
    # single calls and hold batch at 87/s.
    confirming = forecast_lanes(87_000, hybrid=False, confirm=True, offline_share=0.2, **one)
    assert round(confirming.ids_per_second) == 870
    assert confirming.calls == 8_700 + 17_400
    two = forecast_lanes(
        121_200, batch_rate=96, single_rate=444, hybrid=True, confirm=True, offline_share=0.2
    )
    assert round(two.ids_per_second) == 1212
    assert two.mode == "hybrid+confirm"
    with pytest.raises(UsageError, match="offline-share"):
        forecast_lanes(10, hybrid=True, confirm=True, offline_share=1.5, **one)
