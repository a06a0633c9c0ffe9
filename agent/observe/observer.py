"""The observation loop of the agent: load BPF (or fall back to procfs), sample, lint."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.observe import snapshot
from agent.observe.bpfprobe import (
    BpfProbe,
    BpfUnavailableError,
    ProbeConfig,
    load_probe,
    pid_max,
    possible_cpus,
)
from agent.observe.kheaders import KernelHeadersError, prepare_bcc_kernel_source
from agent.observe.layercheck import LayerCheck
from agent.observe.linter import PlacementLinter, read_smt_siblings
from agent.observe.targets import PodTarget, TargetCache
from agent.observe.threads import ThreadSampler
from agent.settings import AgentSettings
from agent.topology import parse_cpu_list

log = logging.getLogger(__name__)

SOURCE_BPF = "bpf"
SOURCE_PROCFS = "procfs"
# Pod groups in the BPF maps: more than the kubelet's default of 110 pods per node.
MAX_GROUPS = 1024
# Minimum seconds between two reads of a held cgroup v1 thread list for it to be fresh.
V1_HELD_LIST_SECONDS = 2.0

PodSource = Callable[[], Iterable[Mapping[str, Any]]]


class Observer:
    """Samples every container thread once per interval and keeps the latest snapshot."""

    def __init__(self, settings: AgentSettings, layout: CgroupLayout, pods: PodSource) -> None:
        self.settings = settings
        self.layout = layout
        self.pods = pods
        self.targets = TargetCache(layout)
        self.probe: BpfProbe | None = None
        self.source = SOURCE_PROCFS
        self.source_detail = "not started"
        self.linter = PlacementLinter(
            read_smt_siblings(settings.sysfs_root),
            parse_cpu_list(settings.observe_protected_cpus),
        )
        self.layer_check = LayerCheck(layout, self.linter.counts)
        self.sampler = self._new_sampler()
        self.sampled_at: float | None = None
        self.samples = 0
        self.sample_cpu_seconds = 0.0
        self.last_sample_seconds = 0.0
        self.last_targets: list[PodTarget] = []
        self.started = asyncio.Event()

    async def start(self) -> None:
        """Load the BPF programs when enabled; on any failure log why and use procfs."""
        if self.settings.bpf_enabled:
            try:
                self.probe = await self._load_probe()
            except (BpfUnavailableError, KernelHeadersError, OSError) as error:
                self.source_detail = f"BPF unavailable: {error}"
                log.warning(
                    "BPF programs not loaded, observing through procfs only",
                    extra={"node": self.settings.node_name, "error": str(error)},
                )
        else:
            self.source_detail = "BPF disabled by --no-bpf-enabled"
            log.info("BPF disabled, observing through procfs only")
        if self.probe is not None:
            self.source = SOURCE_BPF
            self.source_detail = "BPF programs attached to sched_switch"
            self.linter.configure_probe(self.probe)
            log.info(
                "BPF programs attached",
                extra={"node": self.settings.node_name, "max_cpus": self.probe.config.max_cpus},
            )
        self.sampler = self._new_sampler()
        self.started.set()

    def _new_sampler(self) -> ThreadSampler:
        settings = self.settings
        interval = settings.observe_interval_seconds
        detail_passes = round(settings.observe_procfs_detail_interval_seconds / interval)
        listing_passes = max(1, round(settings.observe_procfs_listing_interval_seconds / interval))
        # On cgroup v1 a held descriptor read again within a second returned its previous
        # list (measured on Linux 6.18), so hold the lists there only with reads 2 s apart.
        hold_lists = (
            self.layout.version is CgroupVersion.V2
            or listing_passes * interval >= V1_HELD_LIST_SECONDS
        )
        return ThreadSampler(
            self.layout,
            self.probe,
            settings.observe_max_threads,
            detail_passes=max(1, detail_passes),
            state_tiers=self.linter.sampled_tiers(),
            listing_passes=listing_passes,
            hold_lists=hold_lists,
        )

    async def _load_probe(self) -> BpfProbe:
        settings = self.settings
        await asyncio.to_thread(
            prepare_bcc_kernel_source, settings.state_dir, settings.bpf_kernel_headers_path
        )
        config = ProbeConfig(
            pid_max=pid_max(),
            max_threads=self.settings.observe_max_threads,
            max_groups=MAX_GROUPS,
            max_cpus=possible_cpus(),
            open_reserve_grace_ns=int(self.settings.open_reserve_grace_seconds * 1e9),
            btf_path=settings.bpf_kernel_btf_path,
        )
        return await load_probe(config)

    def pod_targets(self) -> list[PodTarget]:
        """Return the running pods and their cgroups, from the current pod watch."""
        return self.targets.targets(self.pods())

    def sample(self) -> None:
        """Run one pass over the pods: membership, counters, histograms, linter."""
        started = time.perf_counter()
        cpu_started = time.thread_time()
        self.last_targets = self.pod_targets()
        self.sampler.sample(self.last_targets)
        if self.probe is not None:
            self.linter.update_from_probe(self.probe)
        else:
            self.linter.update_from_samples(self.sampler.records.values())
        self.sampled_at = time.time()
        self.samples += 1
        self.sample_cpu_seconds += time.thread_time() - cpu_started
        self.last_sample_seconds = time.perf_counter() - started

    async def run(self, stop: asyncio.Event) -> None:
        """Start, then sample once per interval until ``stop`` is set."""
        await self.start()
        interval = self.settings.observe_interval_seconds
        try:
            while not stop.is_set():
                began = time.monotonic()
                self.sample()
                remaining = interval - (time.monotonic() - began)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, remaining))
        finally:
            self.close()

    def snapshot(self) -> dict[str, Any]:
        """Build the ``/observe`` document (schema in docs/observe.md)."""
        return snapshot.build(self)

    def close(self) -> None:
        """Release thread descriptors and detach the BPF programs."""
        self.sampler.close()
        if self.probe is not None:
            self.probe.close()
            self.probe = None
