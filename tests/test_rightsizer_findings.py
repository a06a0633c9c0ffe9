"""Rightsizer analysis: thread name groups, behaviour split, and the three findings."""

import pytest

from rightsizer.features import thread_features
from rightsizer.findings import FindingKind, analyse
from rightsizer.grouping import assign_groups
from rightsizer.names import name_group
from tests.threadhistory import Thread, history


@pytest.mark.parametrize(
    ("comm", "group"),
    [
        ("worker-3", "worker-N"),
        ("worker-12", "worker-N"),
        ("pool-1-thread-7", "pool-N-thread-N"),
        ("http-nio-8080-e", "http-nio-N-e"),  # cut to 15 bytes by the kernel
        ("GC Thread#0", "gc thread#N"),
        ("obj-7f3a9c12", "obj-N"),
        ("0x1f-loop", "N-loop"),
        ("cafe", "cafe"),  # a word of hex letters without a digit stays
        ("", "(unnamed)"),
    ],
)
def test_name_group_strips_digits_and_hex(comm: str, group: str) -> None:
    assert name_group(comm) == group


def kinds(threads: list[Thread], intervals: int = 60) -> dict[FindingKind, set[str]]:
    found: dict[FindingKind, set[str]] = {}
    for finding in analyse(history(threads, intervals)).findings:
        found.setdefault(finding.kind, set()).add(finding.group)
    return found


LIGHT = [Thread(f"worker-{i}", 0.03) for i in range(4)]


def test_hot_thread_found_when_average_is_low() -> None:
    found = kinds([Thread("evloop", 0.95), *LIGHT])
    assert found.get(FindingKind.HOT_THREAD) == {"evloop"}


def test_starved_hot_thread_counts_its_wait() -> None:
    # Runs only 0.55 of a core but waits 0.4 more: it wants a whole core.
    found = kinds([Thread("evloop", 0.55, wait=0.4), *LIGHT])
    assert found.get(FindingKind.HOT_THREAD) == {"evloop"}


def test_starved_hot_thread_advice_names_static_cpu_manager() -> None:
    analysis = analyse(history([Thread("evloop", 0.55, wait=0.4), *LIGHT]))
    assert "static CPU manager" in analysis.findings[0].advice


@pytest.mark.parametrize(
    ("case", "threads"),
    [
        ("busy pool", [Thread(f"calc-{i}", 0.92) for i in range(4)]),
        ("below a core", [Thread("loop", 0.7), *LIGHT]),
        ("saturated 10% of the time", [Thread("loop", [0.97] * 6 + [0.1] * 54), *LIGHT]),
    ],
)
def test_hot_thread_not_found(case: str, threads: list[Thread]) -> None:
    assert FindingKind.HOT_THREAD not in kinds(threads), case


def test_hot_thread_found_when_saturated_a_quarter_of_the_time() -> None:
    found = kinds([Thread("loop", [0.97] * 15 + [0.1] * 45), *LIGHT])
    assert found.get(FindingKind.HOT_THREAD) == {"loop"}


def test_two_hot_threads_form_one_finding_per_group() -> None:
    analysis = analyse(history([Thread("shard-0", 0.95), Thread("shard-1", 0.93), *LIGHT]))
    hot = [f for f in analysis.findings if f.kind is FindingKind.HOT_THREAD]
    assert len(hot) == 1
    assert hot[0].tids == (100, 101)


BURSTING = [Thread(f"exec-{i}", 0.02, wait=0.03, slice_ms=8) for i in range(8)]


def test_burst_pool_found_when_threads_queue_together() -> None:
    found = kinds([*BURSTING, Thread("main", 0.01)])
    assert found.get(FindingKind.BURST_POOL) == {"exec-N"}


@pytest.mark.parametrize(
    ("case", "threads"),
    [
        ("no queueing", [Thread(f"exec-{i}", 0.02, wait=0.001) for i in range(8)]),
        ("too few threads", [Thread(f"exec-{i}", 0.02, wait=0.03) for i in range(3)]),
        ("busy threads", [Thread(f"exec-{i}", 0.5, wait=0.3) for i in range(8)]),
        # The node is saturated: every thread waits as long per timeslice as the pool does.
        ("waits like the others", [*BURSTING, Thread("main", 0.2, wait=0.3, slice_ms=8)]),
    ],
)
def test_burst_pool_not_found(case: str, threads: list[Thread]) -> None:
    assert FindingKind.BURST_POOL not in kinds(threads), case


CHAIN = [Thread(f"io-{i}", 0.05, wait=0.02, slice_ms=0.2) for i in range(2)]


def test_wake_chain_found() -> None:
    found = kinds([*CHAIN, Thread("main", 0.2)])
    assert found.get(FindingKind.WAKE_CHAIN) == {"io-N"}


@pytest.mark.parametrize(
    ("case", "threads"),
    [
        ("one thread is no chain", CHAIN[:1]),
        ("no wait", [Thread(f"io-{i}", 0.05, wait=0.0, slice_ms=0.2) for i in range(2)]),
        ("long slices", [Thread(f"io-{i}", 0.05, wait=0.02, slice_ms=5) for i in range(2)]),
        (
            "preempted, not waking",
            [Thread(f"io-{i}", 0.05, wait=0.02, slice_ms=0.2, voluntary=False) for i in range(2)],
        ),
    ],
)
def test_wake_chain_not_found(case: str, threads: list[Thread]) -> None:
    assert FindingKind.WAKE_CHAIN not in kinds(threads), case


def test_unnamed_threads_split_by_behaviour() -> None:
    threads = [
        Thread("server", 0.95),
        *[Thread("server", 0.1) for _ in range(3)],
        *[Thread("server", 0.001) for _ in range(2)],
        *[Thread("server", 0.05, wait=0.02, slice_ms=0.2) for _ in range(2)],
    ]
    data = history(threads)
    groups = assign_groups(data, thread_features(data))
    expected = ["server~hot"] + ["server~busy"] * 3 + ["server~idle"] * 2
    assert groups == [*expected, "server~wakeup", "server~wakeup"]


def test_named_pool_is_not_split() -> None:
    threads = [Thread("worker-0", 0.9), *[Thread(f"worker-{i}", 0.001) for i in range(1, 5)]]
    data = history(threads)
    assert set(assign_groups(data, thread_features(data))) == {"worker-N"}
