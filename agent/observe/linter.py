"""The placement linter: four invariants of where tiers run, counted continuously.

Definitions (also in docs/observe.md):

- ``smt_collision``: a critical-tier thread starts running on one SMT sibling of a core while a
  low or background thread runs on the other, or the reverse. Each such start counts once.
- ``protected_fallback``: a container thread of a tier other than critical is switched in on
  a CPU of the protected critical layer.
- ``open_reserve``: a critical-tier thread waited on a run queue longer than the grace period
  while a low or background thread ran somewhere on the node during that wait.
- ``layer_mismatch``: tasks that scx_layered's per-layer task counts show to be outside the
  layer the agent's config puts them in. Counted by ``agent.observe.layercheck`` at each read
  of scx_layered's statistics, not here.

With BPF the first three are counted by ``bpf/sched_observe.bpf.c`` at every context switch.
Without BPF, ``smt_collision`` and ``protected_fallback`` are sampled once per interval from each
thread's state and last CPU in procfs. That is an approximation, because a runnable thread
waiting for a CPU also shows state R. ``open_reserve`` stays 0, because procfs cannot tell
waiting apart from running.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.observe import bpfprobe
from agent.observe.threads import ThreadRecord
from agent.topology import parse_cpu_list
from temper.tiers import Tier

INVARIANTS = ("smt_collision", "protected_fallback", "open_reserve", "layer_mismatch")


def read_smt_siblings(sysfs_root: Path) -> dict[int, int]:
    """Map each CPU with an SMT sibling to its first one, from ``thread_siblings_list``."""
    siblings: dict[int, int] = {}
    cpu_dir = sysfs_root / "devices/system/cpu"
    try:
        online = parse_cpu_list((cpu_dir / "online").read_text())
    except (OSError, ValueError):
        return siblings
    for cpu in online:
        try:
            listed = (cpu_dir / f"cpu{cpu}/topology/thread_siblings_list").read_text()
            group = parse_cpu_list(listed)
        except (OSError, ValueError):
            continue
        others = [other for other in group if other != cpu]
        if others:
            siblings[cpu] = others[0]
    return siblings


@dataclass
class LinterCounts:
    """Cumulative violation counts, and seconds where BPF measures them."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))
    seconds: dict[str, float] = field(default_factory=dict)


class PlacementLinter:
    """Keeps the linter counts from BPF counters or from procfs samples."""

    def __init__(self, siblings: Mapping[int, int], protected_cpus: Iterable[int]) -> None:
        self.siblings = dict(siblings)
        self.protected_cpus = frozenset(protected_cpus)
        self.counts = LinterCounts()

    def configure_probe(self, probe: bpfprobe.BpfProbe) -> None:
        """Hand the topology facts to the BPF programs."""
        probe.set_siblings(self.siblings)
        probe.set_protected(self.protected_cpus)

    def update_from_probe(self, probe: bpfprobe.BpfProbe) -> None:
        """Copy the counters the BPF programs keep."""
        counters = probe.read_counters()
        events = self.counts.events
        events["smt_collision"] = counters[bpfprobe.SMT_COLLISIONS]
        events["protected_fallback"] = counters[bpfprobe.PROTECTED_FALLBACKS]
        events["open_reserve"] = counters[bpfprobe.OPEN_RESERVES]
        self.counts.seconds = {
            "smt_collision": counters[bpfprobe.SMT_COLLISION_NS] / 1e9,
            "protected_fallback": counters[bpfprobe.PROTECTED_FALLBACK_NS] / 1e9,
            "open_reserve": counters[bpfprobe.OPEN_RESERVE_NS] / 1e9,
        }

    def sampled_tiers(self) -> frozenset[Tier]:
        """Return the tiers whose thread states a procfs sample needs fresh at each pass.

        ``smt_collision`` involves critical and batch threads, and only with SMT siblings;
        ``protected_fallback`` every tier but critical, and only with protected CPUs.
        """
        tiers: set[Tier] = set()
        if self.siblings:
            tiers |= {tier for tier in Tier if tier is Tier.CRITICAL or tier.is_batch}
        if self.protected_cpus:
            tiers |= {tier for tier in Tier if tier is not Tier.CRITICAL}
        return frozenset(tiers)

    def update_from_samples(self, records: Iterable[ThreadRecord]) -> None:
        """Count violations visible in one procfs sample of thread states and CPUs."""
        if not self.siblings and not self.protected_cpus:
            return  # neither invariant can fire on this node
        tier_on_cpu: dict[int, list[Tier]] = {}
        events = self.counts.events
        for record in records:
            if not record.running or record.last_cpu < 0:
                continue
            tier = record.pod.target.tier
            tier_on_cpu.setdefault(record.last_cpu, []).append(tier)
            if record.last_cpu in self.protected_cpus and tier is not Tier.CRITICAL:
                events["protected_fallback"] += 1
        for cpu, tiers in tier_on_cpu.items():
            sibling = self.siblings.get(cpu)
            if sibling is None or sibling < cpu:
                continue  # count each core once, from its lower CPU
            others = tier_on_cpu.get(sibling, [])
            if (Tier.CRITICAL in tiers and any(t.is_batch for t in others)) or (
                Tier.CRITICAL in others and any(t.is_batch for t in tiers)
            ):
                events["smt_collision"] += 1
