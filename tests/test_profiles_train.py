"""Training mode without processes: grouping keys, the proposal rules, the rendered file."""

import pytest

from agent.profiles.schema import Treatment, load_profile_text
from agent.profiles.train import GroupStats, Thresholds, group_key, propose, render_profile


@pytest.mark.parametrize(
    ("comm", "key"),
    [
        ("ib_io_rd-12", "ib_io_rd-"),
        ("GC Thread#3", "GC Thread#"),
        ("C2 CompilerThre", "C2 CompilerThre"),
        ("pool-2-thread-7", "pool-2-thread-"),
        ("python3", "python"),
        ("1234", ""),
    ],
)
def test_group_key_strips_trailing_digits(comm: str, key: str) -> None:
    assert group_key(comm) == key


def stats(
    slices_per_second: float, mean_slice_us: float, voluntary: float, delay_us: float
) -> GroupStats:
    """One thread observed for 10 s; its CPU share follows from slices and their length."""
    window = 10.0
    slices = int(slices_per_second * window)
    switches = 1000
    return GroupStats(
        prefix="t_",
        comms=["t_1"],
        window_s=window,
        run_s=slices * mean_slice_us / 1e6,
        wait_s=slices * delay_us / 1e6,
        slices=slices,
        voluntary=int(switches * voluntary),
        involuntary=switches - int(switches * voluntary),
    )


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (stats(100, 9500, 0.1, 500), Treatment.EXCLUSIVE),
        (stats(500, 100, 0.9, 100), Treatment.LATENCY),
        (stats(500, 100, 0.9, 5), Treatment.DEFAULT),
        (stats(500, 100, 0.3, 100), Treatment.DEFAULT),
        (stats(200, 2000, 0.9, 100), Treatment.DEFAULT),
        (stats(10, 5000, 0.9, 100), Treatment.DEFAULT),
        (stats(1, 100, 1.0, 0), Treatment.YIELD),
        (stats(0, 0, 0.0, 0), Treatment.YIELD),
    ],
    ids=[
        "near one cpu",
        "short voluntary slices that wait",
        "no run-queue delay",
        "mostly preempted",
        "long slices",
        "few slices",
        "rarely runs",
        "never ran",
    ],
)
def test_propose(group: GroupStats, expected: Treatment) -> None:
    assert propose(group, Thresholds()) == expected


def test_rendered_profile_passes_schema() -> None:
    groups = [
        GroupStats("VM Thread", ["VM Thread"], 1.0, 0.001, 0.0, 10),
        GroupStats('it\'s "odd": ', ['it\'s "odd": 1'], 1.0, 0.5, 0.0, 10),
        GroupStats("über_", ["über_1"], 1.0, 0.0, 0.0, 0),
    ]
    proposal = render_profile(
        "trained-x",
        "from a test",
        images=["x:*"],
        groups=groups,
        unusable=["1234"],
        thresholds=Thresholds(),
    )
    profile = load_profile_text(proposal.text, "proposal")
    assert [g.prefixes for g in profile.groups] == [("VM Thread",), ('it\'s "odd": ',), ("über_",)]
    assert [g.name for g in profile.groups] == ["vm-thread", "it-s-odd", "ber"]
    assert "# Threads left out (no usable name prefix): 1234" in proposal.text
