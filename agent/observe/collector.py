"""Prometheus metrics of the observation, generated from the latest sample at scrape time.

Labels stay bounded: ``namespace``, ``pod`` and ``tier`` for pods, ``tier`` for tiers,
``invariant`` for the linter and ``layer`` for the layer check; never a thread id.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agent.observe.histogram import cumulative_buckets
from agent.observe.threads import CPU_NS, INVOLUNTARY, RUN_DELAY_NS, TIMESLICES, VOLUNTARY
from temper.tiers import Tier

if TYPE_CHECKING:
    from agent.observe.observer import Observer

POD_LABELS = ["namespace", "pod", "tier"]


class ObserveCollector(Collector):
    """Reads the observer's state on each scrape."""

    def __init__(self, observer: "Observer") -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        """Yield every observation metric family."""
        self.observer.sampler.refresh()
        yield from self._pod_metrics()
        yield from self._tier_metrics()
        yield from self._linter_metrics()
        yield from self._layer_check_metrics()
        yield from self._self_metrics()

    def _pod_metrics(self) -> Iterator[Metric]:
        threads = GaugeMetricFamily(
            "temper_observe_pod_threads", "Threads observed in the pod", labels=POD_LABELS
        )
        cpu = CounterMetricFamily(
            "temper_observe_pod_cpu_seconds",
            "CPU time of the pod's threads, exited threads included",
            labels=POD_LABELS,
        )
        delay = CounterMetricFamily(
            "temper_observe_pod_runq_delay_seconds",
            "Time the pod's threads waited on a run queue (schedstat run_delay)",
            labels=POD_LABELS,
        )
        slices = CounterMetricFamily(
            "temper_observe_pod_timeslices",
            "Times a thread of the pod was switched in",
            labels=POD_LABELS,
        )
        switches = CounterMetricFamily(
            "temper_observe_pod_context_switches",
            "Context switches of the pod's threads, by kind (voluntary or involuntary)",
            labels=[*POD_LABELS, "kind"],
        )
        p99 = GaugeMetricFamily(
            "temper_observe_pod_runq_delay_p99_seconds",
            "99th percentile run-queue delay of the pod's wake-ups in the last interval "
            "(upper bound of its histogram bucket; BPF only)",
            labels=POD_LABELS,
        )
        for pod in self.observer.sampler.pods.values():
            target = pod.target
            labels = [target.namespace, target.name, target.tier.value]
            threads.add_metric(labels, len(pod.threads))
            cpu.add_metric(labels, pod.totals[CPU_NS] / 1e9)
            delay.add_metric(labels, pod.totals[RUN_DELAY_NS] / 1e9)
            slices.add_metric(labels, pod.totals[TIMESLICES])
            switches.add_metric([*labels, "voluntary"], pod.totals[VOLUNTARY])
            switches.add_metric([*labels, "involuntary"], pod.totals[INVOLUNTARY])
            if pod.runq_delay_p99_us is not None:
                p99.add_metric(labels, pod.runq_delay_p99_us / 1e6)
        yield from (threads, cpu, delay, slices, switches, p99)

    def _tier_metrics(self) -> Iterator[Metric]:
        sampler = self.observer.sampler
        cpu = CounterMetricFamily(
            "temper_observe_tier_cpu_seconds",
            "CPU time of the tier's container threads",
            labels=["tier"],
        )
        delay = CounterMetricFamily(
            "temper_observe_tier_runq_delay_seconds",
            "Run-queue delay of the tier's container threads",
            labels=["tier"],
        )
        for tier in Tier:
            cpu.add_metric([tier.value], sampler.tier_totals[tier][CPU_NS] / 1e9)
            delay.add_metric([tier.value], sampler.tier_totals[tier][RUN_DELAY_NS] / 1e9)
        yield from (cpu, delay)
        if self.observer.probe is None:
            return
        histogram = HistogramMetricFamily(
            "temper_observe_runq_delay_wakeup_seconds",
            "Run-queue delay of each wake-up or preemption of the tier's threads, from BPF",
            labels=["tier"],
        )
        for tier in Tier:
            buckets = cumulative_buckets(sampler.tier_hist[tier])
            histogram.add_metric(
                [tier.value],
                [(repr(bound) if bound != float("inf") else "+Inf", count)
                 for bound, count in buckets],
                sampler.tier_hist_sum_ns[tier] / 1e9,
            )  # fmt: skip
        yield histogram

    def _linter_metrics(self) -> Iterator[Metric]:
        counts = self.observer.linter.counts
        events = CounterMetricFamily(
            "temper_observe_linter_violations",
            "Placement invariant violations (definitions in docs/observe.md)",
            labels=["invariant"],
        )
        for invariant, value in counts.events.items():
            events.add_metric([invariant], value)
        yield events
        seconds = CounterMetricFamily(
            "temper_observe_linter_violation_seconds",
            "Time spent in violation of a placement invariant (BPF only)",
            labels=["invariant"],
        )
        for invariant, spent in counts.seconds.items():
            seconds.add_metric([invariant], spent)
        yield seconds

    def _layer_check_metrics(self) -> Iterator[Metric]:
        result = self.observer.layer_check.result
        if result is None or result.detail:
            return
        expected = GaugeMetricFamily(
            "temper_observe_layer_expected_tasks",
            "Bounds of the pod threads the running config puts in the layer (bound=min: ran "
            "since the scheduler attached; bound=max: also those that may not have)",
            labels=["layer", "bound"],
        )
        mismatch = GaugeMetricFamily(
            "temper_observe_layer_mismatch_tasks",
            "Tasks by which scx_layered's count for the layer lies outside the expected bounds "
            "at the last stats read (definition in docs/observe.md)",
            labels=["layer"],
        )
        for name, layer in result.layers.items():
            expected.add_metric([name, "min"], layer.expected_min)
            if layer.expected_max is not None:
                expected.add_metric([name, "max"], layer.expected_max)
            mismatch.add_metric([name], layer.mismatch)
        yield from (expected, mismatch)

    def _self_metrics(self) -> Iterator[Metric]:
        observer = self.observer
        bpf = GaugeMetricFamily(
            "temper_observe_bpf_loaded", "1 when the BPF programs are attached, 0 on procfs"
        )
        bpf.add_metric([], 1 if observer.probe is not None else 0)
        samples = CounterMetricFamily("temper_observe_samples", "Sampling passes")
        samples.add_metric([], observer.samples)
        cpu = CounterMetricFamily(
            "temper_observe_sample_cpu_seconds", "CPU time the agent spent sampling"
        )
        cpu.add_metric([], observer.sample_cpu_seconds)
        duration = GaugeMetricFamily(
            "temper_observe_sample_duration_seconds", "Wall-clock time of the last pass"
        )
        duration.add_metric([], observer.last_sample_seconds)
        dropped = GaugeMetricFamily(
            "temper_observe_untracked_threads",
            "Threads left out of the last pass because observe_max_threads was reached",
        )
        dropped.add_metric([], observer.sampler.untracked_threads)
        yield from (bpf, samples, cpu, duration, dropped)
        if observer.probe is not None:
            run_ns, _ = observer.probe.run_stats()
            run = CounterMetricFamily(
                "temper_observe_bpf_run_seconds",
                "Run time of the BPF programs (counted only while kernel.bpf_stats_enabled=1)",
            )
            run.add_metric([], run_ns / 1e9)
            yield run
