"""CPU request (and optional limit) for one container from its per-thread demand.

Demand of a thread in an interval is its CPU time plus its run-queue delay, capped at one
core: the time it wanted a CPU. It stays high when the container is starved, where CPU
usage alone under-estimates the need. Two requests come out of the same history:

- the reviewed request, for a person who applies it and keeps it::

      hot threads x 1 core + P(1 - target ratio) of the other threads' demand over the window

- the tracking request, for an automation that applies it again every apply interval::

      hot threads x 1 core + recent level of the other threads' demand x (1 + backtested margin)

  (see :mod:`rightsizer.tracking`). Until the history holds enough for the backtest, it
  equals the reviewed request.

Both add the safety margin on top. A hot thread cannot use more than one core, so it adds
exactly one core and no margin. When the median of the last ``reaction_minutes`` exceeds
the level a request covers, demand has stepped up: that request then covers the maximum of
those recent minutes plus ``STEP_MARGIN_FRACTION``, so a step up shows after about half of
``reaction_minutes``. A step down shows in the tracking request within the level window,
and in the reviewed request once the old level has left the top of the window.
"""

import math
from dataclasses import dataclass

import numpy as np

from rightsizer.findings import Analysis, Finding, FindingKind, analyse
from rightsizer.history import ContainerHistory, ContainerKey, FloatArray
from rightsizer.tracking import forecast

FULL_CONFIDENCE_INTERVALS = 30
LIMIT_STEP_MILLICORES = 100
# A few minutes of data show a new level's peak less reliably than a day shows the old
# one's percentile. Without this margin, the benchmark's step-up traces took up to 20
# minutes, instead of 5, to reach the P90 of their new demand.
STEP_MARGIN_FRACTION = 0.1


@dataclass(frozen=True)
class RecommendationPolicy:
    """Parameters of the request computation; RightsizerSettings describes each field."""

    window_seconds: float = 24 * 3600.0
    target_above_ratio: float = 0.05
    margin_fraction: float = 0.0
    reaction_seconds: float = 360.0
    apply_interval_seconds: float = 300.0
    level_seconds: float = 1800.0
    min_cpu_millicores: int = 10
    recommend_limits: bool = False


@dataclass(frozen=True)
class ContainerRecommendation:
    """The recommendation for one container of one pod, with its evidence."""

    key: ContainerKey
    request_millicores: int  # the reviewed request, covering the window
    limit_millicores: int | None
    limit_reason: str
    basis: str  # "window" or "recent": which history set the reviewed request
    tracking_request_millicores: int  # for the next apply interval only
    tracking_basis: str  # "level", "recent" or "window" (too little history: the reviewed one)
    findings: tuple[Finding, ...]
    confidence: float  # 0 to 1: how much of the window the history covers
    window_start_seconds: float
    window_end_seconds: float
    observed_seconds: float
    usage_p95_millicores: int
    demand_p95_millicores: int


def _millicores(cores: float) -> int:
    return math.ceil(round(cores * 1000, 6))


def _percentile(values: FloatArray, fraction: float) -> float:
    return float(np.percentile(values, fraction * 100)) if len(values) else 0.0


def _limit(
    policy: RecommendationPolicy, analysis: Analysis, rest: FloatArray, request_m: int
) -> tuple[int | None, str]:
    hot = len(analysis.hot_threads)
    pools = [f for f in analysis.findings if f.kind is FindingKind.BURST_POOL]
    if not policy.recommend_limits:
        reason = "no CPU limit: the request protects the container and a CFS quota only adds"
        reason += " throttling"
        if pools:
            reason += f"; it would throttle the burst pool {pools[0].group!r}"
        return None, reason
    peak = hot + (float(rest.max()) if len(rest) else 0.0)
    burst = hot + sum(math.ceil(f.metrics["coactive_threads_p90"]) for f in pools)
    limit_cores = max(peak, float(burst), request_m / 1000)
    limit_m = math.ceil(_millicores(limit_cores) / LIMIT_STEP_MILLICORES) * LIMIT_STEP_MILLICORES
    if burst >= peak and pools:
        reason = f"covers the {burst - hot} co-active threads of the burst pools"
    else:
        reason = "covers the peak demand of the window"
    if hot:
        reason += f" plus one core for each of the {hot} hot threads"
    return limit_m, reason


def _stepped_up(recent: FloatArray, level: float) -> float | None:
    """Return the level that covers a step up in ``recent`` demand, or None without one."""
    if len(recent) and float(np.median(recent)) > level:
        # Only minutes of data at the new level: take their maximum, not a percentile.
        return float(recent.max()) * (1 + STEP_MARGIN_FRACTION)
    return None


def _request_millicores(policy: RecommendationPolicy, hot: int, level: float) -> int:
    return max(policy.min_cpu_millicores, _millicores(hot + level * (1 + policy.margin_fraction)))


def recommend_container(
    history: ContainerHistory, policy: RecommendationPolicy, now_seconds: float
) -> ContainerRecommendation:
    """Recommend for the window of ``history`` that ends at ``now_seconds``."""
    window = history.between(now_seconds - policy.window_seconds, now_seconds)
    analysis = analyse(window)
    demand = window.demand
    usage = window.usage
    others = np.ones(len(window.threads), dtype=bool)
    others[analysis.hot_threads] = False
    rest = demand[:, others].sum(axis=1)
    hot = len(analysis.hot_threads)
    recent = rest[window.end_seconds > now_seconds - policy.reaction_seconds]

    level = _percentile(rest, 1 - policy.target_above_ratio)
    basis = "window"
    stepped = _stepped_up(recent, level)
    if stepped is not None:
        # NOTE: the window's percentile passes the new level's median only once a tenth of
        # the window is at the new level (2.4 hours of 24). Until then, and now and then
        # for the rest of the day, this basis applies, so the request moves more.
        level, basis = stepped, "recent"
    request_m = _request_millicores(policy, hot, level)

    tracking_m, tracking_basis = request_m, "window"
    tracked = forecast(
        window.end_seconds,
        window.seconds,
        rest,
        level_seconds=policy.level_seconds,
        apply_interval_seconds=policy.apply_interval_seconds,
        target_above_ratio=policy.target_above_ratio,
    )
    if tracked is not None:
        tracking_level, tracking_basis = tracked.request_cores, "level"
        stepped = _stepped_up(recent, tracking_level)
        if stepped is not None:
            tracking_level, tracking_basis = stepped, "recent"
        tracking_m = _request_millicores(policy, hot, tracking_level)

    limit_m, limit_reason = _limit(policy, analysis, rest, request_m)
    coverage = window.observed_seconds / policy.window_seconds
    confidence = min(1.0, coverage) * min(1.0, window.intervals / FULL_CONFIDENCE_INTERVALS)
    return ContainerRecommendation(
        key=history.key,
        request_millicores=request_m,
        limit_millicores=limit_m,
        limit_reason=limit_reason,
        basis=basis,
        tracking_request_millicores=tracking_m,
        tracking_basis=tracking_basis,
        findings=tuple(analysis.findings),
        confidence=round(confidence, 2),
        window_start_seconds=float(window.end_seconds[0] - window.seconds[0])
        if window.intervals
        else now_seconds,
        window_end_seconds=now_seconds,
        observed_seconds=round(window.observed_seconds, 1),
        usage_p95_millicores=_millicores(_percentile(usage.sum(axis=1), 0.95)),
        demand_p95_millicores=_millicores(_percentile(demand.sum(axis=1), 0.95)),
    )
