"""The tracking request and the risk budget, on series with a known result.

Histories have 10-second intervals; ``history(threads, N)`` ends at N x 10 seconds.
"""

import numpy as np
import pytest

from rightsizer.recommend import RecommendationPolicy, recommend_container
from rightsizer.tracking import (
    BACKTEST_LAGS,
    MIN_BACKTEST_INTERVALS,
    backtest_errors,
    forecast,
    rolling_levels,
)
from tests.threadhistory import Thread, history

DAY_INTERVALS = 8640
INTERVAL = 10.0


def times(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Return end times and lengths of ``count`` 10-second intervals."""
    return (np.arange(count) + 1) * INTERVAL, np.full(count, INTERVAL)


def track(values: np.ndarray, target: float = 0.05, level_seconds: float = 1800.0) -> float:
    """Return the tracking request (cores) after ``values``, which must allow a forecast."""
    end, seconds = times(len(values))
    result = forecast(
        end,
        seconds,
        values,
        level_seconds=level_seconds,
        apply_interval_seconds=300.0,
        target_above_ratio=target,
    )
    assert result is not None
    return result.request_cores


def test_rolling_level_is_time_weighted_mean() -> None:
    end = np.array([10.0, 20.0, 30.0, 40.0])
    seconds = np.full(4, 10.0)
    levels, coverage = rolling_levels(end, seconds, np.array([1.0, 2.0, 3.0, 4.0]), 20.0)
    assert levels.tolist() == [1.0, 1.5, 2.5, 3.5]
    assert coverage.tolist() == [0.5, 1.0, 1.0, 1.0]


def test_rolling_level_coverage_drops_over_gap() -> None:
    # The third interval ends 100 s after the second: a 20-s span there holds only itself.
    end = np.array([10.0, 20.0, 120.0])
    seconds = np.full(3, 10.0)
    levels, coverage = rolling_levels(end, seconds, np.array([1.0, 1.0, 5.0]), 20.0)
    assert levels[-1] == 5.0
    assert coverage[-1] == 0.5


def test_backtest_uses_level_from_lag_earlier() -> None:
    end, _ = times(10)
    values = np.arange(1.0, 11.0)
    levels = values.copy()  # a level equal to the interval's own value
    errors = backtest_errors(end, values, levels, np.ones(10, dtype=bool), 10.0 * BACKTEST_LAGS)
    # The first lag is one interval: each value against the one before it.
    first = errors[:9]
    assert first.tolist() == pytest.approx((values[1:] / values[:-1] - 1).tolist())
    # The last lag is five intervals: the first five intervals have no forecast yet.
    assert len(errors) == 9 + 8 + 7 + 6 + 5


def test_forecast_needs_enough_history() -> None:
    end, seconds = times(MIN_BACKTEST_INTERVALS)
    values = np.full(MIN_BACKTEST_INTERVALS, 0.5)
    result = forecast(
        end,
        seconds,
        values,
        level_seconds=600.0,
        apply_interval_seconds=300.0,
        target_above_ratio=0.05,
    )
    # The longest lag takes 30 intervals, so fewer than the minimum remain backtested.
    assert result is None


@pytest.mark.parametrize("target", [0.02, 0.05, 0.1, 0.2])
def test_risk_budget_picks_quantile_of_known_noise(target: float) -> None:
    # Demand is 1 core times independent uniform noise in [0.5, 1.5]. The 30-minute level
    # stays close to 1 core, so the request is 1 + the (1 - target) quantile of U(-0.5, 0.5).
    rng = np.random.default_rng(7)
    values = rng.uniform(0.5, 1.5, DAY_INTERVALS)
    expected = 1.0 + (0.5 - target)
    assert track(values, target) == pytest.approx(expected, abs=0.03)


def test_risk_budget_share_above_matches_target() -> None:
    # Replay the forecast every 5 minutes over a second day of the same noise and count the
    # intervals above the request held until the next forecast.
    rng = np.random.default_rng(11)
    values = rng.gamma(4.0, 0.25, 2 * DAY_INTERVALS)
    above = 0
    scored = 0
    for start in range(DAY_INTERVALS, 2 * DAY_INTERVALS, 30):
        request = track(values[start - DAY_INTERVALS : start], 0.05)
        block = values[start : start + 30]
        above += int((block > request).sum())
        scored += len(block)
    assert above / scored == pytest.approx(0.05, abs=0.01)


def test_tracking_follows_diurnal_curve() -> None:
    # Two days of a daily cycle between 0.4 and 1.6 cores with 5% noise. Over the second day
    # the tracking request stays above the next 5 minutes' mean demand, and on average within
    # 12% of it. A request covering the day would sit near 1.6 cores all day.
    rng = np.random.default_rng(3)
    t = np.arange(2 * DAY_INTERVALS) * INTERVAL
    curve = 1.0 + 0.6 * np.sin(2 * np.pi * t / 86400.0)
    values = curve * (1 + rng.normal(0.0, 0.05, len(t)))
    ratios = []
    for start in range(DAY_INTERVALS, 2 * DAY_INTERVALS, 360):
        request = track(values[start - DAY_INTERVALS : start])
        ratios.append(request / values[start : start + 30].mean())
    assert min(ratios) > 1.0
    assert float(np.mean(ratios)) < 1.12
    # The 30-minute level lags the curve by about 15 minutes, so where the curve falls
    # fastest relative to its level, near the trough, the request is furthest above it.
    assert max(ratios) < 1.2


def test_tracking_margin_is_relative_to_level() -> None:
    # The same relative noise at a level four times higher gives a four times higher request.
    rng = np.random.default_rng(5)
    noise = rng.uniform(0.8, 1.2, DAY_INTERVALS)
    low = track(0.25 * noise)
    high = track(1.0 * noise)
    assert high == pytest.approx(4 * low, rel=1e-9)


def test_reviewed_request_is_percentile_of_window() -> None:
    # 100 intervals at 0.1 to 1.0 core: the 90th percentile interpolates to 0.91.
    usage = [0.1 + 0.9 * i / 99 for i in range(100)]
    policy = RecommendationPolicy(window_seconds=3600.0, target_above_ratio=0.1)
    recommendation = recommend_container(history([Thread("main", usage)], 100), policy, 1000.0)
    assert recommendation.request_millicores == 910


def test_short_history_tracking_equals_reviewed() -> None:
    policy = RecommendationPolicy(window_seconds=3600.0)
    recommendation = recommend_container(history([Thread("main", 0.4)], 60), policy, 600.0)
    assert recommendation.tracking_basis == "window"
    assert recommendation.tracking_request_millicores == recommendation.request_millicores


def step_history(before: float, after: float, after_intervals: int) -> list[Thread]:
    """Return four workers whose summed demand steps from ``before`` to ``after`` cores."""
    count = DAY_INTERVALS
    rng = np.random.default_rng(1)
    level = np.where(np.arange(count) < count - after_intervals, before, after) / 4
    return [Thread(f"worker-{i}", list(level * rng.uniform(0.9, 1.1, count))) for i in range(4)]


def test_step_down_shows_in_tracking_request_only() -> None:
    # One hour at 0.5 core after 23 hours at 2 cores.
    threads = step_history(2.0, 0.5, 360)
    recommendation = recommend_container(
        history(threads, DAY_INTERVALS), RecommendationPolicy(), DAY_INTERVALS * INTERVAL
    )
    assert recommendation.tracking_basis == "level"
    assert 500 < recommendation.tracking_request_millicores < 600
    assert recommendation.request_millicores > 2000


def test_step_up_uses_recent_maximum_in_tracking() -> None:
    # Five minutes at 2 cores after a day at 0.5 core: the level has not caught up yet.
    threads = step_history(0.5, 2.0, 30)
    recommendation = recommend_container(
        history(threads, DAY_INTERVALS), RecommendationPolicy(), DAY_INTERVALS * INTERVAL
    )
    assert recommendation.tracking_basis == "recent"
    assert recommendation.tracking_request_millicores >= 2000 * 1.1


def test_hot_thread_adds_core_to_tracking_request() -> None:
    workers = [Thread(f"worker-{i}", 0.05) for i in range(4)]
    plain = recommend_container(
        history(workers, DAY_INTERVALS), RecommendationPolicy(), DAY_INTERVALS * INTERVAL
    )
    with_hot = recommend_container(
        history([Thread("evloop", 0.95), *workers], DAY_INTERVALS),
        RecommendationPolicy(),
        DAY_INTERVALS * INTERVAL,
    )
    assert plain.tracking_basis == "level"
    assert plain.tracking_request_millicores == 200
    assert with_hot.tracking_request_millicores == 1200
