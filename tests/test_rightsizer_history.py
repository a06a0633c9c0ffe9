"""Rightsizer history: /observe parsing, per-interval deltas, the SQLite store and retention."""

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from rightsizer.deltas import ContainerInterval, DeltaTracker
from rightsizer.history import ContainerKey
from rightsizer.snapshot import InvalidSnapshotError, Snapshot, parse_snapshot
from rightsizer.store import HistoryStore, HistoryStoreError
from tests.observesnapshots import FakePod, FakeThread, snapshot_body

DAY = 86400.0
KEY = ContainerKey("shop", "web-1", "uid-1", "app")


def pod(*threads: FakeThread) -> FakePod:
    return FakePod("shop", "web-1", "uid-1", list(threads))


def snapshot(pods: list[FakePod], ts: float, **kwargs: Any) -> Snapshot:
    return parse_snapshot(orjson.dumps(snapshot_body(pods, ts, **kwargs)), "test")


def deltas_by_tid(interval: ContainerInterval) -> dict[int, tuple[float, float]]:
    return {
        d.tid: (round(d.cpu_seconds, 6), round(d.runq_delay_seconds, 6)) for d in interval.deltas
    }


# --- /observe parsing


def test_snapshot_parses_threads() -> None:
    parsed = snapshot([pod(FakeThread(7, "worker-1", 0.5, 0.1))], ts=10.0)
    thread = parsed.pods[0].containers[0].threads[0]
    assert (parsed.node, parsed.timestamp_seconds) == ("node-a", 10.0)
    assert (thread.tid, thread.comm) == (7, "worker-1")
    assert thread.cpu_seconds_total == pytest.approx(5.0)
    assert thread.runq_delay_seconds_total == pytest.approx(1.0)


def body_with(**changes: Any) -> bytes:
    body = snapshot_body([pod(FakeThread(7, "w", 0.5))], 10.0)
    body.update(changes)
    return orjson.dumps(body)


def thread_with(**changes: Any) -> bytes:
    body = snapshot_body([pod(FakeThread(7, "w", 0.5))], 10.0)
    body["pods"][0]["containers"][0]["threads"][0].update(changes)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("case", "body", "message"),
    [
        ("not JSON", b"{", "not JSON"),
        ("a list", b"[]", "expected an object"),
        ("version 2", body_with(v=2), "v=2 is not supported"),
        ("no pods", body_with(pods=None), "'pods'"),
        ("ts a string", body_with(ts="now"), "'ts'"),
        ("negative CPU", thread_with(cpu_seconds_total=-1), "'cpu_seconds_total' is -1"),
        ("tid a bool", thread_with(tid=True), "'tid'"),
    ],
)
def test_snapshot_invalid(case: str, body: bytes, message: str) -> None:
    with pytest.raises(InvalidSnapshotError, match=message):
        parse_snapshot(body, "http://agent/observe")


def test_snapshot_error_names_source() -> None:
    with pytest.raises(InvalidSnapshotError, match="http://agent-a/observe"):
        parse_snapshot(b"{", "http://agent-a/observe")


# --- deltas


def test_deltas_first_snapshot_is_baseline() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    assert tracker.update(snapshot([pod(FakeThread(1, "main", 0.5))], ts=100.0)) == []


def test_deltas_difference_over_interval() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    threads = [FakeThread(1, "main", 0.5, 0.25), FakeThread(2, "worker-0", 0.1)]
    tracker.update(snapshot([pod(*threads)], ts=100.0))
    [interval] = tracker.update(snapshot([pod(*threads)], ts=110.0))
    assert interval.seconds == 10.0
    assert deltas_by_tid(interval) == {1: (5.0, 2.5), 2: (1.0, 0.0)}


def test_deltas_new_thread_counts_whole() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    tracker.update(snapshot([pod(FakeThread(1, "main", 0.5))], ts=100.0))
    # The new thread started at t=105: 5 s at 0.4 core.
    born = FakeThread(3, "worker-1", 0.4)
    body = snapshot_body([pod(FakeThread(1, "main", 0.5))], 110.0)
    body["pods"][0]["containers"][0]["threads"].append(born.counters(5.0))
    [interval] = tracker.update(parse_snapshot(body, "test"))
    assert deltas_by_tid(interval)[3] == (2.0, 0.0)


def test_deltas_renamed_thread_keeps_counters() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    tracker.update(snapshot([pod(FakeThread(1, "python", 0.5))], ts=100.0))
    [interval] = tracker.update(snapshot([pod(FakeThread(1, "evloop", 0.5))], ts=110.0))
    assert deltas_by_tid(interval) == {1: (5.0, 0.0)}
    assert interval.deltas[0].comm == "evloop"


def test_deltas_reused_tid_counts_new_thread() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    tracker.update(snapshot([pod(FakeThread(1, "main", 0.5))], ts=100.0))
    # Counters went backwards: a new thread with the same tid, 2 s old at 0.5 core.
    body = snapshot_body([pod(FakeThread(1, "main", 0.5))], 110.0, start_seconds=108.0)
    [interval] = tracker.update(parse_snapshot(body, "test"))
    assert deltas_by_tid(interval) == {1: (1.0, 0.0)}


def test_deltas_skip_thread_longer_than_interval() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    tracker.update(snapshot([pod(FakeThread(1, "main", 0.5))], ts=100.0))
    # A thread the agent did not list before, with 50 s of CPU: not born in a 10 s interval.
    body = snapshot_body([pod(FakeThread(1, "main", 0.5))], 110.0)
    body["pods"][0]["containers"][0]["threads"].append(FakeThread(4, "old", 0.5).counters(100.0))
    [interval] = tracker.update(parse_snapshot(body, "test"))
    assert set(deltas_by_tid(interval)) == {1}


def test_deltas_new_container_is_baseline() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    tracker.update(snapshot([pod(FakeThread(1, "main", 0.5))], ts=100.0))
    other = FakePod("shop", "web-2", "uid-2", [FakeThread(9, "main", 0.5)])
    intervals = tracker.update(snapshot([pod(FakeThread(1, "main", 0.5)), other], ts=110.0))
    assert [i.pod for i in intervals] == ["web-1"]


def test_deltas_long_gap_resets_baseline() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    threads = [FakeThread(1, "main", 0.5)]
    tracker.update(snapshot([pod(*threads)], ts=100.0))
    assert tracker.update(snapshot([pod(*threads)], ts=200.0)) == []
    [interval] = tracker.update(snapshot([pod(*threads)], ts=210.0))
    assert interval.seconds == 10.0


def test_deltas_older_snapshot_skipped() -> None:
    tracker = DeltaTracker(max_gap_seconds=30)
    threads = [FakeThread(1, "main", 0.5)]
    tracker.update(snapshot([pod(*threads)], ts=100.0))
    assert tracker.update(snapshot([pod(*threads)], ts=90.0)) == []
    [interval] = tracker.update(snapshot([pod(*threads)], ts=110.0))
    assert interval.seconds == 10.0


# --- SQLite store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    """An empty history file, closed after the test."""
    with HistoryStore(tmp_path / "h.sqlite") as opened:
        yield opened


def fill(store: HistoryStore, threads: list[FakeThread], start: float, count: int) -> int:
    """Store ``count`` 10-second intervals from ``start``; return the thread rows written."""
    tracker = DeltaTracker(max_gap_seconds=30)
    rows = 0
    for i in range(count + 1):
        rows += store.add(tracker.update(snapshot([pod(*threads)], ts=start + 10 * i)))
    return rows


def test_store_round_trip(store: HistoryStore) -> None:
    fill(store, [FakeThread(1, "evloop", 0.9, 0.05), FakeThread(2, "worker-3", 0.2)], 1000.0, 6)
    history = store.load(KEY, 0.0, 2000.0)
    assert history.intervals == 6
    assert [(t.tid, t.comm, t.group) for t in history.threads] == [
        (1, "evloop", "evloop"),
        (2, "worker-3", "worker-N"),
    ]
    assert history.usage[:, 0] == pytest.approx([0.9] * 6)
    assert history.wait[:, 0] == pytest.approx([0.05] * 6)
    assert history.usage[:, 1] == pytest.approx([0.2] * 6)
    assert history.end_seconds.tolist() == [1010.0 + 10 * i for i in range(6)]


def test_store_skips_idle_threads(store: HistoryStore) -> None:
    rows = fill(store, [FakeThread(1, "main", 0.5), FakeThread(2, "idle", 0.0, 0.0, 0)], 0.0, 4)
    assert rows == 4
    history = store.load(KEY, -1.0, 100.0)
    assert [t.tid for t in history.threads] == [1]
    assert history.intervals == 4  # the intervals still count, so idle time is known


def test_store_window_bounds(store: HistoryStore) -> None:
    fill(store, [FakeThread(1, "main", 0.5)], 0.0, 10)
    history = store.load(KEY, 30.0, 60.0)  # intervals ending in (30, 60]
    assert history.end_seconds.tolist() == [40.0, 50.0, 60.0]
    assert store.latest_seconds() == 100.0
    assert store.containers(95.0) == [KEY]
    assert store.containers(100.0) == []


def test_store_retention_deletes_old_rows(store: HistoryStore) -> None:
    fill(store, [FakeThread(1, "old", 0.5)], 0.0, 3)
    fill(store, [FakeThread(2, "new", 0.5)], 2 * DAY, 3)
    store.remember_owner("uid-1", "Deployment", "web")
    deleted = store.prune(now_seconds=2 * DAY + 100, retention_days=1.0)
    assert deleted == 3
    history = store.load(KEY, 0.0, 3 * DAY)
    assert [t.comm for t in history.threads] == ["new"]
    assert history.end_seconds[0] == 2 * DAY + 10
    assert store.owner("uid-1") == ("Deployment", "web")


def test_store_retention_forgets_gone_container(store: HistoryStore) -> None:
    fill(store, [FakeThread(1, "old", 0.5)], 0.0, 3)
    store.remember_owner("uid-1", "Deployment", "web")
    store.prune(now_seconds=2 * DAY, retention_days=1.0)
    assert store.containers(-1.0) == []
    assert store.owner("uid-1") is None
    assert store.latest_seconds() is None


def test_store_survives_reopen(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        fill(store, [FakeThread(1, "main", 0.5)], 0.0, 3)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        assert store.load(KEY, -1.0, 100.0).intervals == 3


def test_store_rejects_other_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version=7")
    with pytest.raises(HistoryStoreError, match="schema version 7"):
        HistoryStore(path)


def test_store_unopenable_path_names_it(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "h.sqlite"
    with pytest.raises(HistoryStoreError, match="missing-dir"):
        HistoryStore(path)
