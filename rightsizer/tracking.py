"""The tracking request: the recent level of demand times a backtested margin.

A request held for a day must cover the day's peak. A request that an automation applies
again every few minutes (in-place resize) only has to cover the next few minutes, so it
can follow the recent level instead::

    level(t)  = mean demand over the level window ending at t            cores
    error     = demand(t_k) / level(t_k - lag) - 1                       relative
    margin    = the (1 - target ratio) quantile of the errors over the window
    request   = level(now) x (1 + margin)

The errors are a backtest: for every interval k of the window and for lags spread evenly
over (0, apply interval], they compare the demand with the level that a recommendation
computed ``lag`` earlier would have used. The share of those pairs above their forecast is
the share of intervals a tracking request would have left above it, so the quantile keeps
that share at the target. Errors are relative because noise grows with the level, so a
margin learnt before a step up still fits after it.
"""

from dataclasses import dataclass

import numpy as np

from rightsizer.history import FloatArray

# Lags per interval in the backtest, evenly spread over (0, apply interval].
BACKTEST_LAGS = 5
# A level needs at least half of its window observed to take part in the backtest.
MIN_LEVEL_COVERAGE = 0.5
# Fewer backtested intervals than this give no tracking forecast: the quantile of the
# errors would rest on a few minutes of data.
MIN_BACKTEST_INTERVALS = 180
# Relative errors divide by the level. An idle container's level is raised to this floor, so
# a burst after idle time gives a large but finite error.
LEVEL_FLOOR_CORES = 0.001


@dataclass(frozen=True)
class TrackingForecast:
    """The recent level of demand and the margin that keeps the target share above it."""

    level_cores: float
    margin_fraction: float  # the error quantile; negative when the level over-predicts
    backtest_intervals: int

    @property
    def request_cores(self) -> float:
        """The level times one plus the margin, in cores."""
        return self.level_cores * (1 + self.margin_fraction)


def rolling_levels(
    end_seconds: FloatArray, seconds: FloatArray, values: FloatArray, span_seconds: float
) -> tuple[FloatArray, FloatArray]:
    """Return, for each interval, the time-weighted mean of ``values`` over the span ending there.

    The second array is the observed share of the span, from 0 to 1; gaps in the history
    lower it.
    """
    weighted = np.concatenate(([0.0], np.cumsum(values * seconds)))
    observed = np.concatenate(([0.0], np.cumsum(seconds)))
    first = np.searchsorted(end_seconds, end_seconds - span_seconds, side="right")
    last = np.arange(1, len(end_seconds) + 1)
    covered = observed[last] - observed[first]
    levels = np.divide(
        weighted[last] - weighted[first],
        covered,
        out=np.zeros(len(end_seconds)),
        where=covered > 0,
    )
    return levels, np.minimum(1.0, covered / span_seconds)


def backtest_errors(
    end_seconds: FloatArray,
    values: FloatArray,
    levels: FloatArray,
    usable: np.ndarray,
    apply_interval_seconds: float,
) -> FloatArray:
    """Return the relative errors of the level forecasts at every backtest lag.

    ``usable`` marks the intervals whose level may serve as a forecast.
    """
    errors = []
    for step in range(1, BACKTEST_LAGS + 1):
        lag = apply_interval_seconds * step / BACKTEST_LAGS
        source = np.searchsorted(end_seconds, end_seconds - lag, side="right") - 1
        valid = source >= 0
        valid[valid] &= usable[source[valid]]
        forecast = np.maximum(levels[source[valid]], LEVEL_FLOOR_CORES)
        errors.append(values[valid] / forecast - 1)
    return np.concatenate(errors) if errors else np.zeros(0)


def forecast(
    end_seconds: FloatArray,
    seconds: FloatArray,
    values: FloatArray,
    *,
    level_seconds: float,
    apply_interval_seconds: float,
    target_above_ratio: float,
) -> TrackingForecast | None:
    """Return the tracking forecast for the moment after the last interval.

    ``values`` is the demand per interval in cores. Returns None while the history is too
    short for the backtest (fewer than ``MIN_BACKTEST_INTERVALS`` intervals with a
    forecast) or the newest level covers less than half of its window.
    """
    if len(values) == 0:
        return None
    levels, coverage = rolling_levels(end_seconds, seconds, values, level_seconds)
    usable = coverage >= MIN_LEVEL_COVERAGE
    if not usable[-1]:
        return None
    errors = backtest_errors(end_seconds, values, levels, usable, apply_interval_seconds)
    intervals = len(errors) // BACKTEST_LAGS
    if intervals < MIN_BACKTEST_INTERVALS:
        return None
    margin = float(np.quantile(errors, 1 - target_above_ratio))
    return TrackingForecast(
        level_cores=float(levels[-1]), margin_fraction=margin, backtest_intervals=intervals
    )
