"""Read every agent's ``/observe`` snapshot on a schedule and store per-thread deltas.

Each tick fetches all URLs concurrently. A failing agent is logged (the first failure of
a run at WARNING, repeats at DEBUG) and skipped. Its next good snapshot sets a new
baseline if the gap grew too long. Retention runs once an hour.
"""

import asyncio
import contextlib
import logging
import time

import aiohttp

from rightsizer.deltas import ContainerInterval, DeltaTracker
from rightsizer.snapshot import InvalidSnapshotError, Snapshot, parse_snapshot
from rightsizer.store import HistoryStore

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0
# A gap of more than this many collect intervals resets the baseline of that node.
MAX_GAP_INTERVALS = 3.0


class Collector:
    """Polls agents and writes their deltas into a HistoryStore."""

    def __init__(
        self,
        urls: list[str],
        store: HistoryStore,
        interval_seconds: float,
        timeout_seconds: float,
        retention_days: float,
        *,
        max_gap_seconds: float | None = None,
    ) -> None:
        self.urls = urls
        self.store = store
        self.interval_seconds = interval_seconds
        self.retention_days = retention_days
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        if max_gap_seconds is None:
            max_gap_seconds = interval_seconds * MAX_GAP_INTERVALS
        self._tracker = DeltaTracker(max_gap_seconds=max_gap_seconds)
        self._failures: dict[str, int] = {}
        self._last_prune = 0.0
        self.ticks = 0
        self.rows_written = 0

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> Snapshot | None:
        try:
            async with session.get(url) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(
                        response.request_info,
                        (),
                        status=response.status,
                        message=response.reason or "",
                    )
                snapshot = parse_snapshot(await response.read(), url)
        except (aiohttp.ClientError, TimeoutError, InvalidSnapshotError) as error:
            failures = self._failures.get(url, 0) + 1
            self._failures[url] = failures
            log.log(
                logging.WARNING if failures == 1 else logging.DEBUG,
                "reading an agent's /observe snapshot failed, skipping it this interval",
                extra={"url": url, "error": str(error) or repr(error), "attempt": failures},
            )
            return None
        if self._failures.pop(url, 0):
            log.info("agent's /observe snapshot readable again", extra={"url": url})
        return snapshot

    async def tick(self, session: aiohttp.ClientSession) -> int:
        """Fetch every agent once and store the intervals; return the rows written."""
        # TODO: a Prometheus source (per-thread counters scraped from the agents) would
        # plug in here as a second way to obtain snapshots.
        snapshots = await asyncio.gather(*(self._fetch(session, url) for url in self.urls))
        intervals: list[ContainerInterval] = []
        for snapshot in snapshots:
            if snapshot is not None:
                intervals.extend(self._tracker.update(snapshot))
        rows = self.store.add(intervals)
        self.ticks += 1
        self.rows_written += rows
        now = time.time()
        if now - self._last_prune >= PRUNE_INTERVAL_SECONDS:
            self._last_prune = now
            deleted = self.store.prune(now, self.retention_days)
            if deleted:
                log.info("expired history deleted", extra={"rows": deleted})
        return rows

    async def run(self, stop: asyncio.Event, ticks: int | None = None) -> None:
        """Tick every interval until ``stop`` is set or ``ticks`` ticks have run."""
        log.info(
            "collecting per-thread history",
            extra={
                "agents": len(self.urls),
                "interval_seconds": self.interval_seconds,
                "history_path": self.store.path,
            },
        )
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while not stop.is_set() and (ticks is None or self.ticks < ticks):
                started = time.monotonic()
                rows = await self.tick(session)
                log.debug("collected", extra={"rows": rows, "tick": self.ticks})
                if ticks is not None and self.ticks >= ticks:
                    break
                delay = max(0.0, self.interval_seconds - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        log.info("collection stopped", extra={"ticks": self.ticks, "rows": self.rows_written})
