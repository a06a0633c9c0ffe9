"""The two anchors Temper is measured against, re-implemented from their documented algorithms.

VPA recommender (Kubernetes autoscaler, default flags): one CPU sample per minute goes into
a decaying histogram with exponential buckets. The first bucket is 0.01 core wide, each
bucket is 5% wider than the one before, and 176 buckets reach 1000 cores. Each sample weighs
0.1, and its weight halves every 24 h of age. The target
is the P90 of that histogram (the upper edge of the bucket where the cumulative weight
reaches 90%) times 1.15, at least 25m divided among the pod's containers, rounded up to a
millicore. The bounds use P50 and P95 with a confidence factor from the history length.

KRR ``simple`` strategy (Robusta KRR): for each pod, the P95 (linear interpolation) of its
CPU rate over 1.25-minute steps across 14 days; the request is the maximum over pods, at
least 10m, rounded up to a millicore; no CPU limit. It returns no recommendation with fewer
than 100 points or less than 3 hours of history.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# VPA histogram and estimator defaults.
VPA_FIRST_BUCKET_CORES = 0.01
VPA_BUCKET_RATIO = 1.05
VPA_MAX_CORES = 1000.0
VPA_EPSILON = 1e-4  # a bucket with less weight (0.001 x the sample weight 0.1) is empty
VPA_SAMPLE_WEIGHT = 0.1
VPA_HALF_LIFE_SECONDS = 24 * 3600.0
VPA_MAX_DECAY_EXPONENT = 100.0
VPA_TARGET_PERCENTILE = 0.90
VPA_LOWER_PERCENTILE = 0.50
VPA_UPPER_PERCENTILE = 0.95
VPA_MARGIN_FRACTION = 0.15
VPA_POD_MIN_MILLICORES = 25
VPA_CONFIDENCE_INTERVAL_SECONDS = 24 * 3600.0
VPA_SAMPLES_PER_CONFIDENCE_INTERVAL = 1440

# KRR simple strategy defaults.
KRR_STEP_SECONDS = 75.0
KRR_HISTORY_SECONDS = 14 * 86400.0
KRR_PERCENTILE = 95.0
KRR_MIN_MILLICORES = 10
KRR_MIN_POINTS = 100
KRR_MIN_HISTORY_SECONDS = 3 * 3600.0


def _ceil_millicores(cores: float) -> int:
    return math.ceil(round(cores * 1000, 6))


class ExponentialBuckets:
    """Bucket n >= 1 starts at first x (ratio^n - 1) / (ratio - 1); bucket 0 starts at 0."""

    def __init__(
        self,
        first: float = VPA_FIRST_BUCKET_CORES,
        ratio: float = VPA_BUCKET_RATIO,
        maximum: float = VPA_MAX_CORES,
    ) -> None:
        self.first = first
        self.ratio = ratio
        self.count = math.ceil(math.log(maximum * (ratio - 1) / first + 1, ratio)) + 1

    def index(self, value: float) -> int:
        """Return the bucket that contains ``value``, clamped to the first and last bucket."""
        if value < self.first:
            return 0
        raw = math.floor(math.log(value * (self.ratio - 1) / self.first + 1, self.ratio))
        return min(raw, self.count - 1)

    def start(self, bucket: int) -> float:
        """Return the lower edge of ``bucket``."""
        if bucket == 0:
            return 0.0
        return self.first * (self.ratio**bucket - 1) / (self.ratio - 1)


class DecayingHistogram:
    """Weighted histogram whose sample weights halve every ``half_life_seconds`` of age.

    A sample is added with weight w x 2^((t - reference) / half_life). When that exponent
    would pass 100, the reference moves to t and all weights are rescaled. That keeps the
    relative weights and avoids overflow.
    """

    def __init__(
        self,
        half_life_seconds: float = VPA_HALF_LIFE_SECONDS,
        buckets: ExponentialBuckets | None = None,
    ) -> None:
        self.buckets = buckets or ExponentialBuckets()
        self.half_life_seconds = half_life_seconds
        self.weights = np.zeros(self.buckets.count)
        self.reference_seconds = 0.0
        self._has_reference = False

    @property
    def total_weight(self) -> float:
        """Sum of the (scaled) bucket weights."""
        return float(self.weights.sum())

    def add(self, value: float, weight: float, time_seconds: float) -> None:
        """Add one sample taken at ``time_seconds``."""
        if not self._has_reference:
            self.reference_seconds = time_seconds
            self._has_reference = True
        exponent = (time_seconds - self.reference_seconds) / self.half_life_seconds
        if exponent > VPA_MAX_DECAY_EXPONENT:
            self.weights *= 2.0 ** (-exponent)
            self.reference_seconds = time_seconds
            exponent = 0.0
        self.weights[self.buckets.index(value)] += weight * 2.0**exponent

    def percentile(self, fraction: float) -> float:
        """Return the upper edge of the bucket where the cumulative weight reaches ``fraction``.

        The last bucket has no upper edge, so its start is returned. An empty histogram gives 0.
        """
        total = self.total_weight
        filled = np.flatnonzero(self.weights >= VPA_EPSILON)
        if total <= 0 or len(filled) == 0:
            return 0.0
        threshold = fraction * total
        cumulative = 0.0
        bucket = int(filled[0])
        for bucket in range(int(filled[0]), int(filled[-1]) + 1):
            cumulative += float(self.weights[bucket])
            if cumulative >= threshold:
                break
        if bucket < self.buckets.count - 1:
            return self.buckets.start(bucket + 1)
        return self.buckets.start(bucket)


@dataclass(frozen=True)
class VpaEstimate:
    """VPA's CPU target and bounds for one container, in millicores."""

    target_millicores: int
    lower_bound_millicores: int
    upper_bound_millicores: int


class VpaCpuRecommender:
    """VPA's CPU path for one container (all of a workload's pods feed one histogram)."""

    def __init__(self, containers_in_pod: int = 1) -> None:
        self.histogram = DecayingHistogram()
        self.containers_in_pod = containers_in_pod
        self.first_sample_seconds: float | None = None
        self.last_sample_seconds: float | None = None
        self.samples = 0

    def add_sample(self, time_seconds: float, cores: float) -> bool:
        """Add one per-minute usage sample; one not newer than the last is dropped."""
        if self.last_sample_seconds is not None and time_seconds <= self.last_sample_seconds:
            return False
        if self.first_sample_seconds is None:
            self.first_sample_seconds = time_seconds
        self.last_sample_seconds = time_seconds
        self.samples += 1
        self.histogram.add(cores, VPA_SAMPLE_WEIGHT, time_seconds)
        return True

    def confidence(self) -> float:
        """History length in days, or samples / 1440 if that is smaller."""
        if self.first_sample_seconds is None or self.last_sample_seconds is None:
            return 0.0
        span = (
            self.last_sample_seconds - self.first_sample_seconds
        ) / VPA_CONFIDENCE_INTERVAL_SECONDS
        return min(span, self.samples / VPA_SAMPLES_PER_CONFIDENCE_INTERVAL)

    def estimate(self, target_percentile: float = VPA_TARGET_PERCENTILE) -> VpaEstimate:
        """Return target, lower and upper bound with margin, confidence and minimum applied.

        ``target_percentile`` is VPA's ``--target-cpu-percentile`` flag.
        """
        minimum = VPA_POD_MIN_MILLICORES / 1000 / self.containers_in_pod
        margin = 1 + VPA_MARGIN_FRACTION
        confidence = self.confidence()
        target = self.histogram.percentile(target_percentile) * margin
        lower = self.histogram.percentile(VPA_LOWER_PERCENTILE) * margin
        upper = self.histogram.percentile(VPA_UPPER_PERCENTILE) * margin
        if confidence > 0:
            lower *= (1 + 0.001 / confidence) ** -2
            upper *= 1 + 1 / confidence
        else:
            lower = 0.0
            upper = math.inf
        return VpaEstimate(
            target_millicores=_ceil_millicores(max(target, minimum)),
            lower_bound_millicores=_ceil_millicores(max(lower, minimum)),
            upper_bound_millicores=_ceil_millicores(max(upper, minimum))
            if math.isfinite(upper)
            else 10**12,
        )


def krr_simple_millicores(
    rates_per_pod: Sequence[Sequence[float]], history_seconds: float
) -> int | None:
    """Return KRR's ``simple`` CPU request from each pod's 1.25-minute CPU rates, in cores.

    ``history_seconds`` is how much history the rates cover. None means "not enough data".
    """
    points = sum(len(rates) for rates in rates_per_pod)
    if points < KRR_MIN_POINTS or history_seconds < KRR_MIN_HISTORY_SECONDS:
        return None
    per_pod = [float(np.percentile(np.asarray(r), KRR_PERCENTILE)) for r in rates_per_pod if len(r)]
    return max(KRR_MIN_MILLICORES, _ceil_millicores(max(per_pod)))
