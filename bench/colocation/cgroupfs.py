"""Pod cgroups laid out and weighted as the kubelet does it with the cgroupfs driver.

Layout below the ``cpu`` hierarchy (cgroup v1 ``/sys/fs/cgroup/cpu``, or the cgroup v2 root)::

    kubepods/                         cpu.shares = node CPUs * 1024
    kubepods/pod<uid>/<container>     Guaranteed pods
    kubepods/burstable/               cpu.shares = sum of the Burstable pods' requests
    kubepods/burstable/pod<uid>/<container>

Values follow the kubelet (pkg/kubelet/cm, Kubernetes 1.30): ``cpu.shares`` is
``max(2, millicores * 1024 / 1000)``, a CPU limit becomes ``cpu.cfs_quota_us`` over a 100 ms
period, and on cgroup v2 shares convert to ``cpu.weight = 1 + (shares - 2) * 9999 / 262142``
and the quota goes to ``cpu.max``. The container runtime gives the container cgroup the same
values. Processes go into the container cgroup, one level below the pod, because that is
where scx_layered's ``CgroupPrefix`` rules (``.../pod<uid>/``) expect them.

Every directory created is removed at cleanup, children first, and values written to existing
directories (``kubepods`` made by someone else) are put back.
"""

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agent.cgroups import CgroupLayout, CgroupVersion, pod_cgroup_relative_path
from agent.podinfo import PodInfo, QosClass
from temper.tiers import Tier

log = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
MIN_SHARES = 2
MIN_QUOTA_US = 1_000
RMDIR_ATTEMPTS = 50


def shares_from_millicores(millicores: int) -> int:
    """``cpu.shares`` for a CPU request, as the kubelet computes it."""
    return max(MIN_SHARES, millicores * 1024 // 1000)


def weight_from_shares(shares: int) -> int:
    """``cpu.weight`` (cgroup v2) for a ``cpu.shares`` value, as the kubelet converts it."""
    return 1 + ((shares - 2) * 9999) // 262142


def quota_from_millicores(millicores: int) -> int:
    """``cpu.cfs_quota_us`` for a CPU limit over the default 100 ms period."""
    return max(MIN_QUOTA_US, millicores * CFS_PERIOD_US // 1000)


@dataclass(frozen=True)
class PodSpec:
    """A pod of the benchmark: its tier, QoS class and CPU request and limit."""

    name: str
    tier: Tier
    qos: QosClass
    request_millicores: int
    limit_millicores: int | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def container_id(self) -> str:
        """A 64-hex container ID derived from the pod UID, as cgroupfs names container cgroups."""
        return (self.uid.replace("-", "") * 2)[:64]

    def pod_info(self) -> PodInfo:
        """Return the agent's view of this pod."""
        return PodInfo(
            key=f"bench/{self.name}",
            uid=self.uid,
            cgroup_uid=self.uid,
            tier=self.tier,
            temper_class=True,
            qos=self.qos,
            cpu_request_millicores=self.request_millicores,
            cpu_limit_millicores=self.limit_millicores,
            phase="Running",
        )


@dataclass(frozen=True)
class PodCgroup:
    """The directories of one pod: the pod cgroup and its single container cgroup."""

    spec: PodSpec
    pod: Path
    container: Path

    @property
    def procs(self) -> Path:
        """The ``cgroup.procs`` file that processes of the pod are written to."""
        return self.container / "cgroup.procs"


class KubepodsTree:
    """Creates, weights and removes kubelet-style pod cgroups on one ``cpu`` hierarchy."""

    def __init__(self, layout: CgroupLayout, node_cpus: int) -> None:
        self.layout = layout
        self.base = layout.root / "cpu" if layout.version is CgroupVersion.V1 else layout.root
        self.node_cpus = node_cpus
        self.created: list[Path] = []
        self.originals: dict[Path, str] = {}
        self.pods: dict[str, PodCgroup] = {}

    # -- files ----------------------------------------------------------------------------

    def _write(self, path: Path, value: str) -> None:
        directory = path.parent
        if directory not in self.created and path not in self.originals:
            self.originals[path] = path.read_text().strip()
        path.write_text(value)

    def _ensure_directory(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents below the hierarchy's root."""
        missing = [d for d in [directory, *directory.parents] if d.is_relative_to(self.base)]
        for path in reversed(missing):
            if path == self.base or path.is_dir():
                continue
            if self.layout.version is CgroupVersion.V2:
                self._enable_cpu_controller(path.parent)
            path.mkdir()
            self.created.append(path)

    def _enable_cpu_controller(self, directory: Path) -> None:
        control = directory / "cgroup.subtree_control"
        if "cpu" not in control.read_text().split():
            control.write_text("+cpu")

    def _set_cpu(self, directory: Path, shares: int, quota_us: int | None) -> None:
        if self.layout.version is CgroupVersion.V1:
            self._write(directory / "cpu.shares", str(shares))
            if quota_us is not None:
                self._write(directory / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                self._write(directory / "cpu.cfs_quota_us", str(quota_us))
        else:
            self._write(directory / "cpu.weight", str(weight_from_shares(shares)))
            if quota_us is not None:
                self._write(directory / "cpu.max", f"{quota_us} {CFS_PERIOD_US}")

    # -- pods -----------------------------------------------------------------------------

    def _qos_directory(self, qos: QosClass) -> Path:
        relative = pod_cgroup_relative_path("x", qos, self.layout.driver)
        return self.base / relative.rsplit("/", 1)[0]

    def add_pod(self, spec: PodSpec) -> PodCgroup:
        """Create the pod and container cgroups with the kubelet's CPU values."""
        pod_directory = self.layout.pod_directory(spec.uid, spec.qos)
        container = pod_directory / spec.container_id
        self._ensure_directory(container)
        self._set_cpu(self.base / "kubepods", self.node_cpus * 1024, None)
        shares = shares_from_millicores(spec.request_millicores)
        limit = spec.limit_millicores
        quota = quota_from_millicores(limit) if limit is not None else None
        self._set_cpu(pod_directory, shares, quota)
        self._set_cpu(container, shares, quota)
        cgroup = PodCgroup(spec, pod_directory, container)
        self.pods[spec.uid] = cgroup
        self._update_burstable_shares()
        return cgroup

    def remove_pod(self, cgroup: PodCgroup) -> None:
        """Remove a pod's cgroups (its processes must have exited) and reweight its QoS group."""
        self.pods.pop(cgroup.spec.uid, None)
        for directory in (cgroup.container, cgroup.pod):
            self._remove_directory(directory)
        self._update_burstable_shares()

    def _update_burstable_shares(self) -> None:
        """Set ``kubepods/burstable`` to its pods' summed requests, as the kubelet's QoS manager."""
        burstable = self._qos_directory(QosClass.BURSTABLE)
        if not burstable.is_dir():
            return
        total = sum(
            c.spec.request_millicores
            for c in self.pods.values()
            if c.spec.qos is QosClass.BURSTABLE
        )
        self._set_cpu(burstable, shares_from_millicores(total), None)

    def _remove_directory(self, directory: Path) -> None:
        for _ in range(RMDIR_ATTEMPTS):
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # the last processes are still leaving the cgroup
        else:
            log.error(
                "cannot remove a benchmark cgroup: remove it by hand once its processes exit",
                extra={"path": str(directory)},
            )
        if directory in self.created:
            self.created.remove(directory)

    def cleanup(self) -> None:
        """Remove every directory created, children first, and restore changed values."""
        for cgroup in list(self.pods.values()):
            self.pods.pop(cgroup.spec.uid, None)
        for directory in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            if directory.name in ("kubepods", "burstable") and _has_children(directory):
                # Another user of the host (a test) put its own pods here meanwhile.
                log.warning(
                    "shared QoS cgroup left in place because it holds other pods",
                    extra={"path": str(directory)},
                )
                self.created.remove(directory)
                continue
            self._remove_directory(directory)
        for path, value in self.originals.items():
            try:
                path.write_text(value)
            except OSError as error:
                log.error(
                    "cannot restore a cgroup value",
                    extra={"path": str(path), "value": value, "error": str(error)},
                )
        self.originals.clear()


def _has_children(directory: Path) -> bool:
    try:
        return any(child.is_dir() for child in directory.iterdir())
    except OSError:
        return False


def throttled_periods(cgroup: Path, version: CgroupVersion) -> int | None:
    """Number of CFS periods in which the cgroup hit its quota (``nr_throttled``)."""
    try:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def node_cpus() -> int:
    """Online CPUs of this machine."""
    return os.cpu_count() or 1
