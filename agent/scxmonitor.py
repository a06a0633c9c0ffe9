"""Poll scx_layered's statistics while it is attached, export them, feed the layer check.

Once per ``scx_stats_interval_seconds``, while the supervisor reports scx_layered attached,
the monitor requests the statistics over one long-lived connection
(:mod:`agent.scxstats`). Each response replaces the per-layer gauges and adds its period's
scheduling events to counters. When the agent's observation is on and the config of the
running scheduler is known, the pod threads are counted right before and right after the
request and compared with the layers' task counts (:mod:`agent.observe.layercheck`).

A failed read never stops the agent: it counts in ``temper_scx_stats_errors_total``, the
per-layer gauges disappear until the next response, and the log gets one warning per kind of
failure and minute. A single failure right after an attach (the stats server starts a moment
after the scheduler attaches) is logged at debug level only.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent.observe.layercheck import CompiledLayer, LayerCheck, LayerCheckError, TaskCounts
from agent.observe.targets import PodTarget
from agent.scxstats import SchedulerStats, ScxStatsClient, ScxStatsError

log = logging.getLogger(__name__)

# Seconds between two warnings about failed reads of the same kind.
FAILURE_LOG_INTERVAL_SECONDS = 60.0

ConfigSource = Callable[[], Sequence[Mapping[str, Any]] | None]
TargetSource = Callable[[], list[PodTarget]]


class _FailureLog:
    """Logs failed reads (a warning at most once per kind and minute) and the recovery."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.consecutive = 0
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def failed(self, error: ScxStatsError) -> None:
        self.consecutive += 1
        now = time.monotonic()
        last = self._last_logged.get(error.reason)
        if self.consecutive == 1 or (
            last is not None and now - last < FAILURE_LOG_INTERVAL_SECONDS
        ):
            self._suppressed[error.reason] = self._suppressed.get(error.reason, 0) + 1
            log.debug("scx_layered stats read failed", extra={"error": str(error)})
            return
        log.warning(
            "cannot read scx_layered statistics, retrying on the next interval",
            extra={
                "path": str(self.path),
                "reason": error.reason,
                "error": str(error),
                "failures_since_last_warning": self._suppressed.pop(error.reason, 0) + 1,
            },
        )
        self._last_logged[error.reason] = now

    def succeeded(self) -> None:
        if self.consecutive > 1:
            log.info(
                "scx_layered statistics readable again",
                extra={"path": str(self.path), "failed_reads": self.consecutive},
            )
        self.consecutive = 0
        self._suppressed.clear()


class ScxStatsMonitor:
    """Reads the statistics of the attached scx_layered periodically; a Prometheus collector."""

    def __init__(
        self,
        socket_path: Path,
        interval_seconds: float,
        timeout_seconds: float,
        *,
        attached: Callable[[], bool],
        instance: Callable[[], object],
        running_config: ConfigSource,
        layer_check: LayerCheck | None = None,
        targets: TargetSource | None = None,
    ) -> None:
        self.client = ScxStatsClient(socket_path, timeout_seconds)
        self.interval_seconds = interval_seconds
        self.attached = attached
        self.instance = instance
        self.running_config = running_config
        self.layer_check = layer_check
        self.targets = targets
        self.latest: SchedulerStats | None = None
        self.reads = 0
        self.errors: dict[str, int] = {}
        self.antistall_tasks_total = 0
        self.userspace_cpu_seconds_total = 0.0
        self.layer_events: dict[str, dict[str, float]] = {}
        self._failures = _FailureLog(socket_path)
        self._was_attached = False

    def register(self, registry: CollectorRegistry) -> None:
        """Export the statistics in ``registry``."""
        registry.register(_Collector(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll once per interval until ``stop`` is set."""
        log.info(
            "reading scx_layered statistics while it is attached",
            extra={
                "path": str(self.client.socket_path),
                "interval_seconds": self.interval_seconds,
            },
        )
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    await self.poll()
                except Exception:
                    # A bug in one read must not end the reads for the agent's lifetime.
                    log.exception("scx_layered statistics read failed unexpectedly")
                    await self.client.close()
                remaining = self.interval_seconds - (time.monotonic() - began)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, remaining))
        finally:
            await self.client.close()

    async def poll(self) -> None:
        """Read the statistics once, or reset when scx_layered is not attached."""
        if not self.attached():
            if self._was_attached:
                log.info("scx_layered detached, statistics paused")
            self._was_attached = False
            self.latest = None
            self._failures.consecutive = 0
            if self.layer_check is not None:
                self.layer_check.reset()
            await self.client.close()
            return
        if not self._was_attached:
            log.info(
                "scx_layered attached, reading its statistics",
                extra={"path": str(self.client.socket_path)},
            )
        self._was_attached = True

        check = self._prepare_check()
        before = await self._count(check)
        try:
            stats = await self.client.read()
        except ScxStatsError as error:
            self.latest = None
            self.errors[error.reason] = self.errors.get(error.reason, 0) + 1
            self._failures.failed(error)
            if check is not None and self.layer_check is not None:
                # The failure is logged above, rate-limited.
                self.layer_check.skip(
                    f"statistics not readable: {error}", time.time(), logged=False
                )
            return
        self._failures.succeeded()
        self._record(stats)

        after = await self._count(check)
        if check is None or before is None or after is None or self.layer_check is None:
            return
        reported = {name: layer.tasks for name, layer in stats.layers.items()}
        await asyncio.to_thread(
            self.layer_check.compare, check[0], before, after, reported, stats.at_seconds
        )

    def _record(self, stats: SchedulerStats) -> None:
        self.reads += 1
        self.latest = stats
        self.antistall_tasks_total += stats.antistall_tasks
        self.userspace_cpu_seconds_total += stats.userspace_cpu_seconds
        for name, layer in stats.layers.items():
            totals = self.layer_events.setdefault(
                name, {"events": 0.0, "preemptions": 0.0, "affinity_violations": 0.0}
            )
            totals["events"] += layer.sched_events
            totals["preemptions"] += layer.sched_events * layer.preempt_ratio
            totals["affinity_violations"] += layer.sched_events * layer.affinity_violation_ratio

    def _prepare_check(self) -> tuple[list[CompiledLayer], object] | None:
        """Return the compiled running config and the scheduler instance, or None.

        The layer check keeps the reason for None as its ``detail``.
        """
        check = self.layer_check
        if check is None or self.targets is None:
            return None
        config = self.running_config()
        if config is None:
            check.skip(
                "the config of the running scheduler is not known to this agent", time.time()
            )
            return None
        try:
            layers = check.layers(config)
        except LayerCheckError as error:
            check.skip(str(error), time.time())
            return None
        return layers, self.instance()

    async def _count(self, check: tuple[list[CompiledLayer], object] | None) -> TaskCounts | None:
        if check is None or self.layer_check is None or self.targets is None:
            return None
        layers, instance = check
        targets = self.targets()
        return await asyncio.to_thread(self.layer_check.count, instance, layers, targets)


class _Collector(Collector):
    """Builds the scx metric families from the monitor's state at scrape time."""

    def __init__(self, monitor: ScxStatsMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        stats = monitor.latest
        up = GaugeMetricFamily(
            "temper_scx_stats_up",
            "1 when the last read of scx_layered's statistics succeeded, 0 when it failed or "
            "scx_layered is not attached",
        )
        up.add_metric([], 1 if stats is not None else 0)
        reads = CounterMetricFamily(
            "temper_scx_stats_reads", "Successful reads of scx_layered's statistics"
        )
        reads.add_metric([], monitor.reads)
        errors = CounterMetricFamily(
            "temper_scx_stats_errors",
            "Failed reads of scx_layered's statistics, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(monitor.errors.items()):
            errors.add_metric([reason], count)
        yield from (up, reads, errors)
        yield from self._totals()
        if stats is not None:
            yield from self._current(stats)

    def _totals(self) -> Iterator[Metric]:
        monitor = self.monitor
        antistall = CounterMetricFamily(
            "temper_scx_antistall_tasks",
            "Tasks scx_layered dispatched through its anti-stall path",
        )
        antistall.add_metric([], monitor.antistall_tasks_total)
        userspace = CounterMetricFamily(
            "temper_scx_userspace_cpu_seconds",
            "CPU time of scx_layered's userspace part, in seconds",
        )
        userspace.add_metric([], monitor.userspace_cpu_seconds_total)
        events = CounterMetricFamily(
            "temper_scx_layer_sched_events",
            "Scheduling events (wake-ups, enqueues, slice expirations) of the layer's tasks",
            labels=["layer"],
        )
        preemptions = CounterMetricFamily(
            "temper_scx_layer_preemptions",
            "Scheduling events in which a task of the layer preempted another task",
            labels=["layer"],
        )
        violations = CounterMetricFamily(
            "temper_scx_layer_affinity_violations",
            "Scheduling events placed against the layer's CPUs because of the task's CPU affinity",
            labels=["layer"],
        )
        for name, totals in sorted(monitor.layer_events.items()):
            events.add_metric([name], totals["events"])
            preemptions.add_metric([name], round(totals["preemptions"]))
            violations.add_metric([name], round(totals["affinity_violations"]))
        yield from (antistall, userspace, events, preemptions, violations)

    def _current(self, stats: SchedulerStats) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "temper_scx_layer_tasks", "Tasks scx_layered holds in the layer", labels=["layer"]
        )
        cpus = GaugeMetricFamily(
            "temper_scx_layer_cpus", "CPUs assigned to the layer", labels=["layer"]
        )
        util = GaugeMetricFamily(
            "temper_scx_layer_util_cpus",
            "CPU time of the layer's tasks over the last stats interval, in CPUs",
            labels=["layer"],
        )
        load = GaugeMetricFamily(
            "temper_scx_layer_load_cpus",
            "Duty-cycle load (running or waiting) of the layer's tasks over the last stats "
            "interval, in CPUs; a task that wakes after a long sleep adds a spike",
            labels=["layer"],
        )
        open_util = GaugeMetricFamily(
            "temper_scx_layer_open_util_ratio",
            "Share of the layer's CPU time spent on CPUs not assigned to the layer",
            labels=["layer"],
        )
        for name, layer in sorted(stats.layers.items(), key=lambda item: item[1].index):
            tasks.add_metric([name], layer.tasks)
            cpus.add_metric([name], layer.cpus)
            if stats.period_seconds is not None:
                util.add_metric([name], layer.util_cpus)
                load.add_metric([name], layer.load_cpus)
                open_util.add_metric([name], layer.open_util_ratio)
        yield from (tasks, cpus)
        if stats.period_seconds is None:
            return  # the first response on a connection covers no real period
        busy = GaugeMetricFamily(
            "temper_scx_busy_ratio",
            "Share of all CPUs busy over the last stats interval, from /proc/stat",
        )
        busy.add_metric([], stats.busy_ratio)
        total = GaugeMetricFamily(
            "temper_scx_util_cpus",
            "CPU time of all layers over the last stats interval, in CPUs",
        )
        total.add_metric([], stats.util_cpus)
        yield from (util, load, open_util, busy, total)
