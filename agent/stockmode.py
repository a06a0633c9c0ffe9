"""Stock-kernel mode: tier treatment through cgroup CPU controls on kernels without sched_ext.

Two controls, both on pod cgroups (cgroup v1 ``cpu`` controller and cgroup v2 alike):

- Low and background pods get ``cpu.idle = 1`` (Linux 5.15+), which makes the pod's CFS group
  entity a SCHED_IDLE entity. It is idle only relative to its siblings: a Burstable batch
  pod yields to the other pods inside ``kubepods/burstable``, not to a Guaranteed pod.
- Critical and high pods get a larger CPU weight: ``cpu.shares`` (v1) or ``cpu.weight``
  (v2) is raised to a configured value in ``cpu.shares`` units (v2 converts it as the kubelet
  does), never lowered. That makes a Guaranteed critical pod outweigh
  ``kubepods/burstable``, whose ``cpu.shares`` is the sum of all Burstable requests, both
  for its CPU share and for wake-up preemption.

Who else writes these files (Kubernetes v1.37.2 source, ``pkg/kubelet``):

- The kubelet writes a pod cgroup's CPU values when it creates the cgroup
  (``cm/pod_container_manager_linux.go``, ``EnsureExists`` does nothing for an existing
  cgroup) and again on an in-place resize (``kuberuntime/kuberuntime_manager.go``,
  ``doPodResizeAction`` through ``SetPodCgroupConfig``), which overwrites a raised weight.
- The kubelet rewrites the QoS-level cgroups (``kubepods/burstable``, ``kubepods/besteffort``)
  at start, every minute (``cm/qos_container_manager_linux.go``, ``UpdateCgroups``) and
  before it creates a pod cgroup (``kubelet.go``, ``SyncPod``). This mode never writes them.
- The kubelet does not manage ``cpu.idle``.

The agent calls :meth:`StockKernelMode.apply` on every reconcile, so a value overwritten by
someone else is set again within one pass. The value found then becomes the one to restore,
because after a resize it is the kubelet's new value.

Kernel side effect (``sched_group_set_idle`` in ``kernel/sched/fair.c``, seen on Linux
6.18): while ``cpu.idle = 1`` the group's weight reads as the minimum and writes to it fail
with EINVAL, and clearing ``cpu.idle`` sets the weight to the default (``cpu.shares`` 1024,
``cpu.weight`` 100), not back to the kubelet's value. The mode therefore saves the weight
before it sets ``cpu.idle`` and writes it back after clearing it.

NOTE: a critical thread that wakes on a CPU running a batch thread can still wait up to a
scheduler tick. On Linux 6.18 the kernel lets the running entity, ``kubepods/burstable`` for a
Guaranteed pod, finish the protected part of its EEVDF slice when that entity is eligible.
The raised weight makes that rare but does not rule it out (traced in docs/benchmarks.md).

Every value changed is recorded first in a state file with its original content and the
content written, and restored when the pod leaves its tier, when the mode is switched off
and when the agent stops. A value someone else changed since is left alone. A new agent
reads the state file, so values changed by an agent that crashed are restored too.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.podinfo import PodInfo, QosClass
from temper.tiers import Tier

log = logging.getLogger(__name__)

IDLE_FILE = "cpu.idle"
WEIGHT_FILES = {CgroupVersion.V1: "cpu.shares", CgroupVersion.V2: "cpu.weight"}
# The weight the kernel gives a group when its cpu.idle goes back to 0 (NICE_0_LOAD).
# NOTE: the v2 value is the kernel's cpu.weight for 1024, derived and not observed, because
# the test host binds the cpu controller to cgroup v1.
KERNEL_RESET_WEIGHTS = {CgroupVersion.V1: "1024", CgroupVersion.V2: "100"}
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144
DEFAULT_CRITICAL_CPU_SHARES = MAX_CPU_SHARES
# 1/32 of the critical value: a busy high pod costs a critical pod little wake-up delay.
DEFAULT_HIGH_CPU_SHARES = 8192
STATE_VERSION = 2


def cpu_weight_from_shares(shares: int) -> int:
    """Convert ``cpu.shares`` to cgroup v2 ``cpu.weight`` as the kubelet does for pod cgroups.

    Kubernetes v1.37.2, ``getCPUWeight`` in ``pkg/kubelet/cm/cgroup_manager_linux.go``: a
    linear map of [2, 262144] onto [1, 10000]. Container runtimes use another curve for
    container cgroups, which this mode does not touch.
    """
    return 1 + ((shares - MIN_CPU_SHARES) * 9999) // (MAX_CPU_SHARES - MIN_CPU_SHARES)


@dataclass
class ChangedValue:
    """One cgroup file this mode changed.

    ``original`` is the content to restore: the content before the first write, or the
    content someone else wrote since. ``written`` is the content this mode wrote, or None for
    a weight saved only because setting ``cpu.idle`` destroys it.
    """

    original: str
    written: str | None


@dataclass(frozen=True)
class _Treatment:
    pod_key: str
    idle: bool
    weight: int | None


class StockKernelMode:
    """Sets and restores ``cpu.idle`` and CPU weights on pod cgroups by tier."""

    def __init__(
        self,
        layout: CgroupLayout,
        state_file: Path,
        *,
        critical_cpu_shares: int = DEFAULT_CRITICAL_CPU_SHARES,
        high_cpu_shares: int = DEFAULT_HIGH_CPU_SHARES,
    ) -> None:
        for name, value in (("critical", critical_cpu_shares), ("high", high_cpu_shares)):
            if not MIN_CPU_SHARES <= value <= MAX_CPU_SHARES:
                raise ValueError(
                    f"{name} CPU shares {value} is out of range: use {MIN_CPU_SHARES} to "
                    f"{MAX_CPU_SHARES}"
                )
        self.layout = layout
        self.state_file = state_file
        self.critical_cpu_shares = critical_cpu_shares
        self.high_cpu_shares = high_cpu_shares
        self.weight_file = WEIGHT_FILES[layout.version]
        self.entries: dict[str, ChangedValue] = self._load()
        self._missing_reported: set[str] = set()
        self._errors_reported: set[str] = set()
        self._best_effort_reported: set[str] = set()

    @property
    def changed(self) -> dict[str, str]:
        """Path of every file this mode changed mapped to the content it will restore."""
        return {path: entry.original for path, entry in self.entries.items()}

    def target_weight(self, tier: Tier) -> int | None:
        """Content this mode writes into the weight file of a pod of ``tier``, or None."""
        shares = {Tier.CRITICAL: self.critical_cpu_shares, Tier.HIGH: self.high_cpu_shares}
        if tier not in shares:
            return None
        if self.layout.version is CgroupVersion.V2:
            return cpu_weight_from_shares(shares[tier])
        return shares[tier]

    # -- state file -------------------------------------------------------------------------

    def _load(self) -> dict[str, ChangedValue]:
        try:
            data = orjson.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.error(
                "cannot read the stock-kernel-mode state file; values changed by an earlier "
                "agent will not be restored",
                extra={"path": str(self.state_file), "error": str(error)},
            )
            return {}
        if not isinstance(data, dict):
            return {}
        if data.get("version") == STATE_VERSION:
            return _parse_entries(data.get("entries"))
        # The first format mapped pod cgroup directories to their original cpu.idle.
        return {
            str(Path(directory) / IDLE_FILE): ChangedValue(str(original), "1")
            for directory, original in data.items()
        }

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        entries = {
            path: {"original": entry.original, "written": entry.written}
            for path, entry in self.entries.items()
        }
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps({"version": STATE_VERSION, "entries": entries}))
        temporary.replace(self.state_file)

    # -- reconcile --------------------------------------------------------------------------

    def apply(self, pods: Iterable[PodInfo]) -> list[str]:
        """Treat every pod by its tier, set again what someone else overwrote, restore the rest.

        Returns the pod keys whose cgroup is missing on this node (reported, retried later).
        """
        treatments: dict[str, _Treatment] = {}
        missing: list[str] = []
        for pod in pods:
            if pod.terminal:
                continue
            weight = self.target_weight(pod.tier)
            if not pod.tier.is_batch and weight is None:
                continue
            directory = self.layout.pod_directory(pod.cgroup_uid, pod.qos)
            needed = IDLE_FILE if pod.tier.is_batch else self.weight_file
            if not (directory / needed).exists():
                missing.append(pod.key)
                if pod.key not in self._missing_reported:
                    self._missing_reported.add(pod.key)
                    log.warning(
                        "pod cgroup not found, stock-kernel mode not applied; retrying on the "
                        "next pass",
                        extra={"pod": pod.key, "path": str(directory / needed)},
                    )
                continue
            if pod.tier is Tier.CRITICAL and pod.qos is QosClass.BEST_EFFORT:
                self._report_best_effort(pod)
            treatments[str(directory)] = _Treatment(pod.key, pod.tier.is_batch, weight)
        self._restore_untreated(treatments)
        for pod_directory, treatment in treatments.items():
            if treatment.idle:
                self._set_idle(Path(pod_directory), treatment.pod_key)
            elif treatment.weight is not None:
                self._raise_weight(Path(pod_directory), treatment.pod_key, treatment.weight)
        return missing

    def restore_all(self) -> None:
        """Put back every value this mode changed."""
        self._restore_untreated({})

    def _restore_untreated(self, treatments: dict[str, _Treatment]) -> None:
        for path in sorted(self.entries):
            entry = self.entries.get(path)
            if entry is None:
                continue  # restored together with its directory's cpu.idle
            file = Path(path)
            treatment = treatments.get(str(file.parent))
            if file.name == IDLE_FILE:
                if treatment is None or not treatment.idle:
                    self._restore_idle(file.parent)
            elif entry.written is None:
                if str(file.parent / IDLE_FILE) not in self.entries:
                    del self.entries[path]  # a saved weight without its cpu.idle: never written
                    self._save()
            elif treatment is None or treatment.weight is None:
                self._restore_weight(file)

    def _report_best_effort(self, pod: PodInfo) -> None:
        if pod.key in self._best_effort_reported:
            return
        self._best_effort_reported.add(pod.key)
        log.warning(
            "critical pod is BestEffort: its QoS cgroup kubepods/besteffort has the minimum "
            "CPU weight, so stock-kernel mode cannot protect it; give it CPU requests",
            extra={"pod": pod.key},
        )

    def _report_error(self, message: str, path: Path, error: Exception, **fields: str) -> None:
        """Log a failed read or write once per file and error."""
        report = f"{path}:{error}"
        if report in self._errors_reported:
            return
        self._errors_reported.add(report)
        log.error(message, extra={"path": str(path), "error": str(error), **fields})

    def _forget(self, *paths: Path) -> None:
        for path in paths:
            self.entries.pop(str(path), None)
        self._save()

    # -- cpu.idle ---------------------------------------------------------------------------

    def _set_idle(self, directory: Path, pod_key: str) -> None:
        idle_path = directory / IDLE_FILE
        weight_path = directory / self.weight_file
        entry = self.entries.get(str(idle_path))
        try:
            current = idle_path.read_text().strip()
            if current == "1":
                return  # set by this mode, or by someone else and then not ours to restore
            weight = weight_path.read_text().strip()
            if entry is None:
                self.entries.setdefault(str(weight_path), ChangedValue(weight, None))
                self.entries[str(idle_path)] = ChangedValue(current, "1")
            else:
                log.warning(
                    "cpu.idle was changed by someone else; setting it again",
                    extra={"pod": pod_key, "path": str(idle_path), "old": current, "new": "1"},
                )
                entry.original = current
                saved = self.entries.setdefault(str(weight_path), ChangedValue(weight, None))
                if weight != KERNEL_RESET_WEIGHTS[self.layout.version]:
                    # Written after cpu.idle was cleared, so newer than the saved weight.
                    saved.original = weight
            self._save()
            idle_path.write_text("1")
        except OSError as error:
            if entry is None:
                self._forget(idle_path, weight_path)
            self._report_error(
                "failed to set cpu.idle; the pod keeps its normal CPU weight",
                idle_path,
                error,
                pod=pod_key,
            )
            return
        log.info(
            "cpu.idle set",
            extra={
                "pod": pod_key,
                "path": str(idle_path),
                "old": current,
                "new": "1",
                "saved_weight": self.entries[str(weight_path)].original,
            },
        )

    def _restore_idle(self, directory: Path) -> None:
        """Clear cpu.idle, then write back the weight that setting it destroyed."""
        idle_path = directory / IDLE_FILE
        weight_path = directory / self.weight_file
        entry = self.entries[str(idle_path)]
        saved = self.entries.get(str(weight_path))
        try:
            current = idle_path.read_text().strip()
            if current == entry.written:
                idle_path.write_text(entry.original)
                log.info(
                    "cpu.idle restored",
                    extra={"path": str(idle_path), "old": current, "new": entry.original},
                )
            else:
                log.warning(
                    "cpu.idle was changed by someone else; leaving it",
                    extra={"path": str(idle_path), "value": current},
                )
            weight = weight_path.read_text().strip()
            # Only a weight still at the kernel's reset value is restored: any other value
            # was written by someone after cpu.idle was cleared.
            reset = KERNEL_RESET_WEIGHTS[self.layout.version]
            if saved is not None and weight == reset and weight != saved.original:
                weight_path.write_text(saved.original)
                log.info(
                    "CPU weight restored after clearing cpu.idle",
                    extra={"path": str(weight_path), "old": weight, "new": saved.original},
                )
        except FileNotFoundError:
            log.debug("pod cgroup gone, nothing to restore", extra={"path": str(directory)})
        except OSError as error:
            # Kept in the state file: the next pass, or the next agent, tries again.
            self._report_error(
                "failed to restore cpu.idle and the CPU weight; retrying on the next pass",
                idle_path,
                error,
            )
            return
        self._forget(idle_path, weight_path)

    # -- CPU weight -------------------------------------------------------------------------

    def _raise_weight(self, directory: Path, pod_key: str, target: int) -> None:
        path = directory / self.weight_file
        target_text = str(target)
        entry = self.entries.get(str(path))
        try:
            current = path.read_text().strip()
            if entry is not None and current == entry.written:
                if current == target_text:
                    return
                if int(entry.original) >= target:
                    self._restore_weight(path)  # the setting was lowered since
                    return
            elif entry is not None:
                log.warning(
                    "CPU weight was changed by someone else (for example a kubelet resize); "
                    "raising it again",
                    extra={"pod": pod_key, "path": str(path), "old": current, "new": target_text},
                )
                entry.original = current
            if entry is None and int(current) >= target:
                return  # the kubelet's own value is at least the target already
            if entry is not None and int(entry.original) >= target:
                self._forget(path)
                return
            if entry is None:
                entry = self.entries[str(path)] = ChangedValue(current, target_text)
            entry.written = target_text
            self._save()
            path.write_text(target_text)
        except (OSError, ValueError) as error:
            self._forget(path)
            self._report_error(
                "failed to raise the CPU weight; the pod keeps the kubelet's weight",
                path,
                error,
                pod=pod_key,
            )
            return
        log.info(
            "CPU weight raised",
            extra={"pod": pod_key, "path": str(path), "old": current, "new": target_text},
        )

    def _restore_weight(self, path: Path) -> None:
        entry = self.entries[str(path)]
        try:
            current = path.read_text().strip()
            if current == entry.written:
                path.write_text(entry.original)
                log.info(
                    "CPU weight restored",
                    extra={"path": str(path), "old": current, "new": entry.original},
                )
            else:
                log.warning(
                    "CPU weight was changed by someone else; leaving it",
                    extra={"path": str(path), "value": current},
                )
        except FileNotFoundError:
            log.debug("pod cgroup gone, nothing to restore", extra={"path": str(path)})
        except OSError as error:
            self._report_error(
                "failed to restore the CPU weight; retrying on the next pass", path, error
            )
            return
        self._forget(path)


def _parse_entries(raw: Any) -> dict[str, ChangedValue]:
    if not isinstance(raw, dict):
        return {}
    entries = {}
    for path, value in raw.items():
        if not isinstance(value, dict) or not isinstance(value.get("original"), str):
            continue
        written = value.get("written")
        entries[str(path)] = ChangedValue(
            value["original"], written if isinstance(written, str) else None
        )
    return entries
