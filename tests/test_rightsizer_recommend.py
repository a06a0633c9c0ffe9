"""CPU request, limit and confidence of one container, from hand-made thread histories.

Histories have 10-second intervals; ``history(threads, N)`` ends at N x 10 seconds.
"""

import pytest

from rightsizer.recommend import RecommendationPolicy, recommend_container
from tests.threadhistory import Thread, history

POLICY = RecommendationPolicy(window_seconds=3600.0)
POOL = [Thread(f"worker-{i}", 0.1) for i in range(5)]
LIGHT = [Thread(f"worker-{i}", 0.03) for i in range(4)]
BURSTING = [Thread(f"exec-{i}", 0.02, wait=0.03, slice_ms=8) for i in range(8)]


def request(threads: list[Thread], policy: RecommendationPolicy = POLICY, n: int = 60) -> int:
    return recommend_container(history(threads, n), policy, n * 10.0).request_millicores


@pytest.mark.parametrize(
    ("case", "threads", "millicores"),
    [
        ("steady pool", POOL, 500),
        ("run-queue delay counts", [Thread(f"w-{i}", 0.3, wait=0.2) for i in range(2)], 1000),
        ("hot thread adds a core", [Thread("evloop", 0.95), *LIGHT], 1120),
        ("starved hot thread adds a core", [Thread("evloop", 0.55, wait=0.4), *LIGHT], 1120),
        ("minimum", [Thread("main", 0.0005)], 10),
    ],
)
def test_request(case: str, threads: list[Thread], millicores: int) -> None:
    assert request(threads) == millicores, case


def test_request_covers_percentile() -> None:
    # 100 intervals at 0.1 to 1.0 core: P95 interpolates to 0.955.
    usage = [0.1 + 0.9 * i / 99 for i in range(100)]
    assert request([Thread("main", usage)], n=100) == 955


def test_request_adds_margin() -> None:
    policy = RecommendationPolicy(window_seconds=3600.0, margin_fraction=0.1)
    assert request(POOL, policy) == 550


def test_request_ignores_history_before_window() -> None:
    threads = [Thread(f"worker-{i}", [0.3] * 30 + [0.1] * 30) for i in range(5)]
    policy = RecommendationPolicy(window_seconds=300.0)
    assert request(threads, policy) == 500


def test_step_up_uses_recent_maximum() -> None:
    # 40 of 1000 intervals at the new level: under 5%, so the window's P95 is the old level.
    threads = [Thread("main", [0.2] * 960 + [0.8] * 40)]
    policy = RecommendationPolicy(window_seconds=20000.0, reaction_seconds=360.0)
    recommendation = recommend_container(history(threads, 1000), policy, 10000.0)
    assert recommendation.basis == "recent"
    assert recommendation.request_millicores == 880  # 0.8 core plus 10%


def test_single_spike_is_no_step() -> None:
    threads = [Thread("main", [0.2] * 995 + [0.8] + [0.2] * 4)]
    policy = RecommendationPolicy(window_seconds=20000.0, reaction_seconds=360.0)
    recommendation = recommend_container(history(threads, 1000), policy, 10000.0)
    assert recommendation.basis == "window"
    assert recommendation.request_millicores == 200


def test_limit_unset_by_default() -> None:
    recommendation = recommend_container(history(POOL), POLICY, 600.0)
    assert recommendation.limit_millicores is None
    assert recommendation.limit_reason.startswith("no CPU limit")


def test_limit_reason_names_burst_pool() -> None:
    recommendation = recommend_container(history([*BURSTING, Thread("main", 0.01)]), POLICY, 600.0)
    assert "burst pool 'exec-N'" in recommendation.limit_reason


@pytest.mark.parametrize(
    ("case", "threads", "millicores", "reason"),
    [
        ("peak of a pool", POOL, 500, "covers the peak demand"),
        ("hot thread", [Thread("evloop", 0.95), *LIGHT], 1200, "one core for each of the 1 hot"),
        ("burst pool width", [*BURSTING, Thread("main", 0.01)], 8000, "8 co-active threads"),
    ],
)
def test_limit_when_requested(
    case: str, threads: list[Thread], millicores: int, reason: str
) -> None:
    policy = RecommendationPolicy(window_seconds=3600.0, recommend_limits=True)
    recommendation = recommend_container(history(threads), policy, 600.0)
    assert recommendation.limit_millicores == millicores, case
    assert reason in recommendation.limit_reason, case


@pytest.mark.parametrize(
    ("window_seconds", "intervals", "confidence"),
    [
        (3600.0, 60, 0.17),  # 600 s of a 3600 s window
        (600.0, 60, 1.0),
        # 200 s of 600 s, times 20 of the 30 intervals that full confidence needs
        (600.0, 20, 0.22),
    ],
)
def test_confidence(window_seconds: float, intervals: int, confidence: float) -> None:
    policy = RecommendationPolicy(window_seconds=window_seconds)
    recommendation = recommend_container(history(POOL, intervals), policy, intervals * 10.0)
    assert recommendation.confidence == confidence


def test_evidence_fields() -> None:
    recommendation = recommend_container(
        history([Thread("evloop", 0.55, wait=0.4), *LIGHT]), POLICY, 600.0
    )
    assert recommendation.window_start_seconds == 0.0
    assert recommendation.window_end_seconds == 600.0
    assert recommendation.observed_seconds == 600.0
    assert recommendation.usage_p95_millicores == 670  # 0.55 + 4 x 0.03
    assert recommendation.demand_p95_millicores == 1070  # plus the 0.4 core of waiting
    assert [f.kind.value for f in recommendation.findings] == ["hot-thread"]
