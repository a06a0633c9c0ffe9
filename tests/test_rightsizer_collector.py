"""The collector against fake agents on loopback: scheduling, failures and retention."""

import asyncio
import logging
import time
from pathlib import Path

import pytest

from rightsizer.collector import Collector
from rightsizer.history import ContainerKey
from rightsizer.store import HistoryStore
from tests.fakeagent import FakeAgent
from tests.observesnapshots import FakePod, FakeThread

WEB = FakePod("shop", "web-1", "uid-1", [FakeThread(1, "evloop", 0.9), FakeThread(2, "gc", 0.1)])
DB = FakePod("shop", "db-0", "uid-2", [FakeThread(5, "main", 0.3)])
WEB_KEY = ContainerKey("shop", "web-1", "uid-1", "app")


def collector(store: HistoryStore, urls: list[str], retention_days: float = 14.0) -> Collector:
    return Collector(
        urls=urls,
        store=store,
        interval_seconds=0.5,
        timeout_seconds=2.0,
        retention_days=retention_days,
        # A loaded test machine may stall a tick; gap handling is tested on DeltaTracker.
        max_gap_seconds=30.0,
    )


async def test_collector_stores_every_agent(tmp_path: Path) -> None:
    async with (
        FakeAgent([WEB], node="node-a") as agent_a,
        FakeAgent([DB], node="node-b") as agent_b,
    ):
        with HistoryStore(tmp_path / "h.sqlite") as store:
            running = collector(store, [agent_a.url, agent_b.url])
            await running.run(asyncio.Event(), ticks=3)
            # The first tick sets the baseline; two intervals of three threads follow.
            assert running.rows_written == 6
            assert [key.pod for key in store.containers(0.0)] == ["db-0", "web-1"]
            history = store.load(WEB_KEY, 0.0, time.time() + 1)
    assert history.intervals == 2
    assert history.seconds.min() >= 0.4  # ticks are an interval apart
    assert history.usage[:, 0] == pytest.approx([0.9, 0.9], abs=0.05)


async def test_collector_skips_failing_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rightsizer.collector")
    async with FakeAgent([WEB]) as healthy, FakeAgent([DB], node="b", status=500) as broken:
        with HistoryStore(tmp_path / "h.sqlite") as store:
            running = collector(store, [healthy.url, broken.url])
            await running.run(asyncio.Event(), ticks=3)
            assert running.rows_written == 4
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert failures[0].url == broken.url  # type: ignore[attr-defined]


async def test_collector_skips_invalid_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeAgent([WEB]) as agent:
        agent.body_override = b'{"v": 2}'
        with HistoryStore(tmp_path / "h.sqlite") as store:
            running = collector(store, [agent.url])
            await running.run(asyncio.Event(), ticks=2)
            assert running.rows_written == 0
    [failure] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert "v=2 is not supported" in failure.error  # type: ignore[attr-defined]


async def test_collector_stops_on_event(tmp_path: Path) -> None:
    async with FakeAgent([WEB]) as agent:
        with HistoryStore(tmp_path / "h.sqlite") as store:
            running = collector(store, [agent.url])
            stop = asyncio.Event()
            task = asyncio.create_task(running.run(stop))
            while agent.requests < 2:
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(task, timeout=5)
    assert running.ticks >= 2


async def test_collector_prunes_expired_history(tmp_path: Path) -> None:
    async with FakeAgent([WEB]) as agent:
        with HistoryStore(tmp_path / "h.sqlite") as store:
            await collector(store, [agent.url]).run(asyncio.Event(), ticks=3)
            # A second collector with a retention of about one second deletes those rows
            # on its first tick, before it has a baseline of its own.
            await asyncio.sleep(1.2)
            await collector(store, [agent.url], retention_days=1 / 86400).run(
                asyncio.Event(), ticks=1
            )
            assert store.latest_seconds() is None
