"""Pod cgroup paths as the kubelet lays them out, for cgroup v1 and v2.

Layout by driver and QoS class (``<uid>`` is the pod UID, or the config hash of a static pod):

- systemd, Guaranteed: ``kubepods.slice/kubepods-pod<uid_>.slice``
- systemd, Burstable: ``kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod<uid_>.slice``
- systemd, BestEffort: ``kubepods.slice/kubepods-besteffort.slice/``
  ``kubepods-besteffort-pod<uid_>.slice``
- cgroupfs: ``kubepods/pod<uid>``, ``kubepods/burstable/pod<uid>``,
  ``kubepods/besteffort/pod<uid>``

Paths are below the cgroup root (v2) or below a controller's root such as ``cpu`` (v1).

The systemd driver replaces ``-`` in the UID with ``_`` because ``-`` separates slice levels.
Container cgroups sit one level below: ``cri-containerd-<id>.scope`` or ``crio-<id>.scope``
with systemd, the bare container ID with cgroupfs.
"""

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from agent.podinfo import QosClass
from agent.settings import CgroupDriver


class CgroupVersion(StrEnum):
    """Which cgroup hierarchy the node runs."""

    V1 = "v1"
    V2 = "v2"


def pod_cgroup_relative_path(uid: str, qos: QosClass, driver: CgroupDriver) -> str:
    """Path of the pod's cgroup relative to the hierarchy root, without slashes at the ends."""
    if driver is CgroupDriver.SYSTEMD:
        escaped = uid.replace("-", "_")
        if qos is QosClass.GUARANTEED:
            return f"kubepods.slice/kubepods-pod{escaped}.slice"
        level = "burstable" if qos is QosClass.BURSTABLE else "besteffort"
        return f"kubepods.slice/kubepods-{level}.slice/kubepods-{level}-pod{escaped}.slice"
    if qos is QosClass.GUARANTEED:
        return f"kubepods/pod{uid}"
    level = "burstable" if qos is QosClass.BURSTABLE else "besteffort"
    return f"kubepods/{level}/pod{uid}"


def container_cgroup_name(container_id: str, driver: CgroupDriver) -> str:
    """Name of a container's cgroup directory from its status ``containerID`` (``runtime://id``)."""
    runtime, _, bare = container_id.partition("://")
    if not bare:
        runtime, bare = "containerd", runtime
    if driver is CgroupDriver.CGROUPFS:
        return bare
    prefix = "crio" if runtime == "cri-o" else f"cri-{runtime}"
    return f"{prefix}-{bare}.scope"


def detect_cgroup_version(cgroup_root: Path) -> CgroupVersion:
    """v2 when the root holds ``cgroup.controllers`` (the unified hierarchy), else v1."""
    return CgroupVersion.V2 if (cgroup_root / "cgroup.controllers").exists() else CgroupVersion.V1


@dataclass(frozen=True)
class CgroupLayout:
    """Where pod cgroups live on this node."""

    root: Path
    version: CgroupVersion
    driver: CgroupDriver

    def pod_directory(self, uid: str, qos: QosClass, controller: str = "cpu") -> Path:
        """Filesystem directory of the pod's cgroup; v1 uses the controller's hierarchy."""
        relative = pod_cgroup_relative_path(uid, qos, self.driver)
        if self.version is CgroupVersion.V2:
            return self.root / relative
        return self.root / controller / relative

    def layered_prefix(self, uid: str, qos: QosClass) -> str:
        """The ``CgroupPrefix`` scx_layered matches: no leading slash, trailing slash."""
        return pod_cgroup_relative_path(uid, qos, self.driver) + "/"
