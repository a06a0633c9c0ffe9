"""The benchmark's arms: how the node treats batch pods while memcached serves.

- ``stock``: the kernel's scheduler with the kubelet's ``cpu.shares`` and nothing else.
- ``stockmode``: the agent's stock-kernel mode, applied through the real
  ``agent.stockmode.StockKernelMode`` with its default weights on the real pod cgroups:
  batch-tier pods get ``cpu.idle = 1``, critical and high pods a raised CPU weight, and
  every value is restored when the cell ends.
- ``layered``: scx_layered with the layer config that the agent's planner
  (``agent.layers.compute_layer_plan``) computes for the pods of the cell, started and
  stopped by the agent's ``SchedulerSupervisor``. Needs a kernel with sched_ext.
- ``pinned``: a reference, not a Temper mode. cgroup v2 cpusets give the critical pods as
  many CPUs of their own as the layered arm's critical layer gets. Every other pod of the
  cell gets the remaining CPUs, much as the kubelet's static CPU manager policy gives a
  Guaranteed pod exclusive CPUs. It shows how far plain isolation gets on this machine, at
  what cost to batch work. Needs cgroup v2.
"""

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.layers import compute_layer_plan
from agent.podinfo import PodInfo
from agent.stockmode import IDLE_FILE, StockKernelMode
from agent.supervisor import SchedulerSupervisor, config_digest
from agent.topology import read_topology
from bench.colocation.processes import BenchmarkError
from temper.tiers import Tier

log = logging.getLogger(__name__)

ARM_NAMES = ("stock", "stockmode", "layered", "pinned")
SCHED_EXT_STATE = Path("/sys/kernel/sched_ext/state")
STOP_TIMEOUT_SECONDS = 60.0


class Arm(Protocol):
    """One way of running the node, engaged before a cell's fillers start and released after."""

    name: str

    def engage(self, pods: list[PodInfo]) -> dict[str, Any]:
        """Apply the arm to the cell's pods and return facts worth recording."""
        ...

    def release(self) -> None:
        """Undo what ``engage`` did."""
        ...

    def close(self) -> None:
        """Undo everything still in effect (the benchmark is ending, maybe on an error)."""
        ...


class StockArm:
    """The kernel's scheduler as configured by the kubelet."""

    name = "stock"

    def engage(self, pods: list[PodInfo]) -> dict[str, Any]:
        return {}

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class StockKernelModeArm:
    """The agent's ``StockKernelMode``: idle batch pods, raised critical and high weights."""

    name = "stockmode"

    def __init__(self, layout: CgroupLayout, state_dir: Path) -> None:
        self.layout = layout
        self.mode = StockKernelMode(layout, state_dir / "stockmode.json")

    def engage(self, pods: list[PodInfo]) -> dict[str, Any]:
        missing = self.mode.apply(pods)
        if missing:
            raise BenchmarkError(f"stock-kernel mode found no cgroup for pods {missing}")
        idle = 0
        raised = 0
        for pod in pods:
            directory = self.layout.pod_directory(pod.cgroup_uid, pod.qos)
            if (directory / IDLE_FILE).read_text().strip() == "1":
                idle += 1
            weight = self.mode.target_weight(pod.tier)
            if weight is not None:
                raised += (directory / self.mode.weight_file).read_text().strip() == str(weight)
        return {"pods_with_cpu_idle": idle, "pods_with_raised_weight": raised}

    def release(self) -> None:
        self.mode.apply([])

    def close(self) -> None:
        self.mode.restore_all()


class LayeredArm:
    """scx_layered with the agent's layer config, run by the agent's scheduler supervisor."""

    name = "layered"

    def __init__(
        self,
        layout: CgroupLayout,
        binary: Path,
        state_dir: Path,
        attach_timeout_seconds: float,
    ) -> None:
        if not SCHED_EXT_STATE.exists():
            raise BenchmarkError(
                f"the layered arm needs a kernel with sched_ext ({SCHED_EXT_STATE} is missing). "
                "Run it inside the sched_ext VM with --vm"
            )
        if not binary.exists():
            raise BenchmarkError(
                f"scx_layered not found at {binary}: run scripts/vm-rig.sh or pass "
                "--scx-layered-path"
            )
        self.layout = layout
        self.binary = binary
        self.state_dir = state_dir
        self.attach_timeout_seconds = attach_timeout_seconds
        self.topology = read_topology(Path("/sys"))
        self.supervisor: SchedulerSupervisor | None = None
        self.cells = 0

    def engage(self, pods: list[PodInfo]) -> dict[str, Any]:
        plan = compute_layer_plan(pods, self.layout, self.topology)
        self.cells += 1
        config_path = self.state_dir / f"layered-{self.cells}.json"
        content = json.dumps(plan.config, indent=2).encode()
        config_path.write_bytes(content)
        supervisor = SchedulerSupervisor(
            binary=str(self.binary),
            config_path=config_path,
            sysfs_root=Path("/sys"),
            state_dir=self.state_dir / "supervisor",
            attach_timeout_seconds=self.attach_timeout_seconds,
            # scx_layered can take tens of seconds to exit under emulation.
            stop_timeout_seconds=STOP_TIMEOUT_SECONDS,
            min_restart_interval_seconds=0.0,
        )
        self.supervisor = supervisor
        asyncio.run(supervisor.ensure(config_digest(content)))
        if not (supervisor.is_running() and supervisor.attached()):
            raise BenchmarkError(
                f"scx_layered did not attach: {supervisor.stats.last_error}. "
                f"See its log in {supervisor.log_file}"
            )
        return {
            "critical_cpus": [plan.critical_cpus_min, plan.critical_cpus_max],
            "layers": [layer["name"] for layer in plan.config],
            "config": str(config_path),
        }

    def release(self) -> None:
        if self.supervisor is not None:
            asyncio.run(self.supervisor.stop("benchmark cell finished"))
            self.supervisor = None

    def close(self) -> None:
        self.release()


class PinnedArm:
    """Critical pods on CPUs of their own through cgroup v2 cpusets, the other pods elsewhere."""

    name = "pinned"

    def __init__(self, layout: CgroupLayout) -> None:
        if layout.version is not CgroupVersion.V2:
            raise BenchmarkError(
                "the pinned arm sets cpuset.cpus in the pod cgroups, which needs cgroup v2: "
                "leave it out of --arms on this node"
            )
        self.layout = layout
        self.topology = read_topology(Path("/sys"))
        if self.topology.cpus < 2:
            raise BenchmarkError("the pinned arm needs two CPUs or more")
        # subtree_control files where this arm enabled cpuset, and pods with a cpuset set.
        self.enabled: list[Path] = []
        self.pinned: list[Path] = []

    def _enable_cpuset(self, pod_directory: Path) -> None:
        parents = [p for p in pod_directory.parents if p.is_relative_to(self.layout.root)]
        for parent in reversed(parents):
            control = parent / "cgroup.subtree_control"
            if "cpuset" not in control.read_text().split():
                control.write_text("+cpuset")
                self.enabled.append(control)

    def engage(self, pods: list[PodInfo]) -> dict[str, Any]:
        # As many CPUs as the critical layer of the layered arm: the same planner decides.
        critical = compute_layer_plan(pods, self.layout, self.topology).critical_cpus_max
        critical = max(1, critical)
        cpus = self.topology.cpus
        critical_list = f"0-{critical - 1}"
        shared_list = f"{critical}-{cpus - 1}"
        for pod in pods:
            directory = self.layout.pod_directory(pod.cgroup_uid, pod.qos)
            self._enable_cpuset(directory)
            cpuset = critical_list if pod.tier is Tier.CRITICAL else shared_list
            (directory / "cpuset.cpus").write_text(cpuset)
            self.pinned.append(directory)
        return {"critical_cpus": critical_list, "other_cpus": shared_list}

    def release(self) -> None:
        for directory in self.pinned:
            with contextlib.suppress(FileNotFoundError):  # a filler pod already removed
                (directory / "cpuset.cpus").write_text("")
        self.pinned.clear()
        for control in reversed(self.enabled):
            control.write_text("-cpuset")
        self.enabled.clear()

    def close(self) -> None:
        self.release()
