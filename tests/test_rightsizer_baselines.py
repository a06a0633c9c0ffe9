"""VPA recommender and KRR ``simple``, against values computed by hand from their formulas."""

import pytest

from rightsizer.baselines import (
    DecayingHistogram,
    ExponentialBuckets,
    VpaCpuRecommender,
    krr_simple_millicores,
)

HOUR = 3600.0


def test_vpa_buckets_number_176() -> None:
    # ceil(log(1000 x 0.05 / 0.01 + 1) / log(1.05)) = ceil(174.6) = 175, plus bucket 0.
    assert ExponentialBuckets().count == 176


@pytest.mark.parametrize(
    ("cores", "bucket"),
    [
        (0.0, 0),
        (0.005, 0),  # below the first bucket's start
        (0.01, 1),
        (0.1, 8),  # floor(log(0.1 x 5 + 1) / log 1.05) = floor(8.31)
        (0.5, 25),  # floor(log(3.5) / log 1.05) = floor(25.68)
        (1.0, 36),  # floor(log(6) / log 1.05) = floor(36.72)
        (5000.0, 175),  # clamped to the last bucket
    ],
)
def test_vpa_bucket_index(cores: float, bucket: int) -> None:
    assert ExponentialBuckets().index(cores) == bucket


@pytest.mark.parametrize(
    ("bucket", "start"),
    [(0, 0.0), (1, 0.01), (2, 0.0205), (26, 0.51113454)],
)
def test_vpa_bucket_start(bucket: int, start: float) -> None:
    # start(n) = 0.01 x (1.05^n - 1) / 0.05
    assert ExponentialBuckets().start(bucket) == pytest.approx(start)


def test_vpa_percentile_is_upper_edge_of_bucket() -> None:
    histogram = DecayingHistogram()
    histogram.add(0.5, 0.1, 0.0)
    # 0.5 core is in bucket 25; the answer is where bucket 26 starts.
    assert histogram.percentile(0.9) == pytest.approx(0.51113454)


def test_vpa_empty_histogram_percentile_zero() -> None:
    assert DecayingHistogram().percentile(0.9) == 0.0


def test_vpa_decay_weights_new_samples_more() -> None:
    histogram = DecayingHistogram()
    for _ in range(3):
        histogram.add(1.0, 0.1, 0.0)
    # Two half-lives later one sample weighs 0.4 against 3 x 0.1: it holds the median.
    histogram.add(0.1, 0.1, 48 * HOUR)
    assert histogram.percentile(0.5) == pytest.approx(0.11026564)
    assert histogram.percentile(0.9) == pytest.approx(1.01628139)


def test_vpa_decay_rescales_before_overflow() -> None:
    histogram = DecayingHistogram()
    histogram.add(1.0, 0.1, 0.0)
    histogram.add(0.1, 0.1, 101 * 24 * HOUR)  # exponent 101 passes the limit of 100
    assert histogram.reference_seconds == 101 * 24 * HOUR
    assert histogram.total_weight == pytest.approx(0.1)
    assert histogram.percentile(0.01) == pytest.approx(0.11026564)


def test_vpa_half_day_estimate() -> None:
    vpa = VpaCpuRecommender()
    for minute in range(720):
        vpa.add_sample(minute * 60.0, 0.5)
    # Confidence c = min(719 min / 1440 min, 720 / 1440) = 0.49931.
    assert vpa.confidence() == pytest.approx(719 / 1440)
    estimate = vpa.estimate()
    # 0.51113 x 1.15 = 0.58780 -> 588m
    assert estimate.target_millicores == 588
    # 0.58780 x (1 + 0.001 / c)^-2 = 0.58546 -> 586m
    assert estimate.lower_bound_millicores == 586
    # 0.58780 x (1 + 1 / c) = 1.76505 -> 1766m
    assert estimate.upper_bound_millicores == 1766


def test_vpa_first_sample_has_open_bounds() -> None:
    vpa = VpaCpuRecommender()
    vpa.add_sample(0.0, 0.5)
    estimate = vpa.estimate()
    assert estimate.target_millicores == 588
    assert estimate.lower_bound_millicores == 25  # lower bound 0, raised to the minimum
    assert estimate.upper_bound_millicores == 10**12  # infinite


@pytest.mark.parametrize(
    ("containers", "target"),
    [(1, 25), (2, 13)],  # 25m split over the pod's containers, rounded up
)
def test_vpa_pod_minimum(containers: int, target: int) -> None:
    vpa = VpaCpuRecommender(containers_in_pod=containers)
    vpa.add_sample(0.0, 0.001)  # bucket 0 -> 0.01 x 1.15 = 11.5m, below the minimum
    assert vpa.estimate().target_millicores == target


def test_vpa_drops_sample_not_newer() -> None:
    vpa = VpaCpuRecommender()
    assert vpa.add_sample(60.0, 0.5)
    assert not vpa.add_sample(60.0, 0.9)
    assert vpa.samples == 1


def test_vpa_target_percentile_flag() -> None:
    vpa = VpaCpuRecommender()
    # The newer half (0.1 core) weighs slightly more, so the median falls in its bucket.
    for minute in range(100):
        vpa.add_sample(minute * 60.0, 1.0 if minute < 50 else 0.1)
    assert vpa.estimate(0.5).target_millicores == 127  # 0.11027 x 1.15
    assert vpa.estimate(0.9).target_millicores == 1169  # 1.01628 x 1.15


RATES = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00 cores


def test_krr_p95_interpolates() -> None:
    # Position 0.95 x 99 = 94.05 between 0.95 and 0.96: 0.9505 -> 951m.
    assert krr_simple_millicores([RATES], 4 * HOUR) == 951


def test_krr_takes_max_over_pods() -> None:
    assert krr_simple_millicores([RATES, [0.1] * 100], 4 * HOUR) == 951


@pytest.mark.parametrize(
    ("case", "rates", "history_seconds"),
    [
        ("99 points", [RATES[:99]], 4 * HOUR),
        ("under 3 hours", [RATES], 2.9 * HOUR),
    ],
)
def test_krr_needs_enough_history(
    case: str, rates: list[list[float]], history_seconds: float
) -> None:
    assert krr_simple_millicores(rates, history_seconds) is None, case


def test_krr_minimum_10m() -> None:
    assert krr_simple_millicores([[0.0] * 100], 4 * HOUR) == 10
