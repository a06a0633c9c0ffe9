"""Replay a trace against Temper, VPA and KRR and score their CPU requests.

Every method re-computes its request every ``cadence_seconds`` from the history up to
that moment, as if each recommendation were applied at once (in-place resize). Temper is
scored twice: its tracking request, made for exactly that use, and its reviewed request,
made to be applied by hand and held. Scores over the scored seconds:

- slack: mean of (request - CPU used), in millicores (negative when under-provisioned);
- above share: the share of seconds whose CPU use exceeds the request;
- reaction: for a step up, the time from the step until the request first reaches the
  P90 of the new demand.
"""

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bench.rightsizer_traces import Trace
from rightsizer.baselines import (
    KRR_STEP_SECONDS,
    VPA_TARGET_PERCENTILE,
    VpaCpuRecommender,
    krr_simple_millicores,
)
from rightsizer.recommend import (
    ContainerRecommendation,
    RecommendationPolicy,
    recommend_container,
)

VPA_SAMPLE_SECONDS = 60.0


class Method(Protocol):
    """A recommender fed from a trace."""

    name: str

    def recommend(self, now_seconds: float) -> int | None: ...


class TemperRun:
    """Temper's recommendations on one trace, computed once per moment for both requests."""

    def __init__(self, trace: Trace, policy: RecommendationPolicy) -> None:
        self.trace = trace
        self.policy = policy
        self.computed: dict[float, ContainerRecommendation] = {}
        # Computed once on the whole trace, then every window takes a slice of it.
        _ = trace.history.demand

    def at(self, now_seconds: float) -> ContainerRecommendation:
        """Return the recommendation for the window ending at ``now_seconds``."""
        if now_seconds not in self.computed:
            self.computed[now_seconds] = recommend_container(
                self.trace.history, self.policy, now_seconds
            )
        return self.computed[now_seconds]


class TemperMethod:
    """Temper's tracking request, which this replay applies at once like every request."""

    name = "Temper"

    def __init__(self, run: TemperRun) -> None:
        self.run = run

    def recommend(self, now_seconds: float) -> int | None:
        return self.run.at(now_seconds).tracking_request_millicores


class TemperReviewedMethod:
    """Temper's reviewed request, sized to be held over the whole window."""

    name = "Temper reviewed"

    def __init__(self, run: TemperRun) -> None:
        self.run = run

    def recommend(self, now_seconds: float) -> int | None:
        return self.run.at(now_seconds).request_millicores


class VpaMethod:
    """VPA's target from one container-usage sample per minute (the last interval's rate).

    ``target_percentile`` is VPA's ``--target-cpu-percentile`` (default 0.9).
    """

    name = "VPA"

    def __init__(
        self,
        trace: Trace,
        sample_seconds: float = VPA_SAMPLE_SECONDS,
        target_percentile: float = VPA_TARGET_PERCENTILE,
    ) -> None:
        self.target_percentile = target_percentile
        history = trace.history
        usage = history.usage.sum(axis=1)
        stride = max(1, round(sample_seconds / float(history.seconds[0])))
        self.times = history.end_seconds[stride - 1 :: stride]
        self.values = usage[stride - 1 :: stride]
        self.fed = 0
        self.vpa = VpaCpuRecommender()

    def recommend(self, now_seconds: float) -> int | None:
        while self.fed < len(self.times) and self.times[self.fed] <= now_seconds:
            self.vpa.add_sample(float(self.times[self.fed]), float(self.values[self.fed]))
            self.fed += 1
        if not self.fed:
            return None
        return self.vpa.estimate(self.target_percentile).target_millicores


class KrrMethod:
    """KRR ``simple``: P95 of 1.25-minute CPU rates over up to 14 days."""

    name = "KRR"

    def __init__(
        self, trace: Trace, step_seconds: float = KRR_STEP_SECONDS, waive_minimums: bool = False
    ) -> None:
        per_second = trace.used_per_second
        step = max(1, round(step_seconds))
        whole = len(per_second) // step
        self.rates = per_second[: whole * step].reshape(whole, step).mean(axis=1)
        self.ends = (np.arange(whole) + 1) * step
        self.waive_minimums = waive_minimums

    def recommend(self, now_seconds: float) -> int | None:
        available = self.rates[self.ends <= now_seconds]
        if self.waive_minimums:
            return (
                max(10, math.ceil(float(np.percentile(available, 95)) * 1000))
                if len(available)
                else None
            )
        return krr_simple_millicores([available.tolist()], float(now_seconds))


@dataclass
class Score:
    """How one method did on one trace."""

    slack_millicores: float
    above_share: float
    reaction_seconds: float | None
    requests: np.ndarray  # one request per cadence step, millicores
    step_times: np.ndarray


def score(
    trace: Trace, method: Method, start_seconds: float, end_seconds: float, cadence_seconds: float
) -> Score:
    """Replay ``method`` over [start, end) and score it against the per-second usage."""
    times = np.arange(start_seconds, end_seconds, cadence_seconds)
    requests = np.array([method.recommend(float(t)) or 0 for t in times], dtype=float)
    first, last = int(start_seconds), int(end_seconds)
    used = trace.used_per_second[first:last]
    per_second = np.repeat(requests, int(cadence_seconds))[: len(used)] / 1000
    reaction = None
    if trace.step_seconds is not None and trace.step_level_cores is not None:
        after = (times >= trace.step_seconds) & (requests / 1000 >= trace.step_level_cores)
        if trace.family != "step-up":
            after[:] = False
        if after.any():
            reaction = float(times[np.argmax(after)] - trace.step_seconds)
    return Score(
        slack_millicores=float((per_second - used).mean() * 1000),
        above_share=float((used > per_second).mean()),
        reaction_seconds=reaction,
        requests=requests,
        step_times=times,
    )


def slack_at_risk(points: list[tuple[float, float]], above_share: float) -> tuple[float, bool]:
    """Return the slack a method needs for ``above_share``, from its (above, slack) sweep.

    Interpolates linearly along the sweep's Pareto front (no point has both less slack and
    fewer seconds above). The flag is False when ``above_share`` lies outside the sweep;
    the slack of the nearest end is returned then.
    """
    front: list[tuple[float, float]] = []
    for above, slack in sorted(points):
        if not front or slack < front[-1][1]:
            front.append((above, slack))
    aboves = np.array([above for above, _ in front])
    slacks = np.array([slack for _, slack in front])
    inside = bool(aboves[0] <= above_share <= aboves[-1])
    return float(np.interp(above_share, aboves, slacks)), inside
