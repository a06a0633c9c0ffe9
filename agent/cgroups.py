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

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from agent.podinfo import QosClass
from agent.settings import CgroupDriver


class CgroupVersion(StrEnum):
    """Version of the cgroup hierarchy the node runs."""

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
    """Return v2 when the root contains ``cgroup.controllers`` (the unified hierarchy), else v1."""
    return CgroupVersion.V2 if (cgroup_root / "cgroup.controllers").exists() else CgroupVersion.V1


@dataclass(frozen=True)
class CgroupLayout:
    """Location, version and naming of the pod cgroups on this node."""

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
        """Return the ``CgroupPrefix`` scx_layered matches: no leading slash, a trailing slash."""
        return pod_cgroup_relative_path(uid, qos, self.driver) + "/"


_CONTAINER_SCOPE = re.compile(r"^(?:cri-containerd|crio|docker)-([0-9a-f]{64})\.scope$")
_BARE_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


def detect_cgroup_driver(root: Path, version: CgroupVersion) -> CgroupDriver | None:
    """Return the driver whose ``kubepods`` layout exists under ``root``, or None."""
    base = root if version is CgroupVersion.V2 else root / "cpu"
    if (base / "kubepods.slice").is_dir():
        return CgroupDriver.SYSTEMD
    if (base / "kubepods").is_dir():
        return CgroupDriver.CGROUPFS
    return None


def container_cgroups(pod_directory: Path) -> dict[str, Path]:
    """Map container IDs to their cgroup directories below a pod cgroup.

    Recognises containerd (``cri-containerd-<id>.scope``), CRI-O (``crio-<id>.scope``; its
    ``crio-conmon-<id>.scope`` monitor cgroups are skipped) and Docker scopes of the systemd
    driver, and bare 64-hex IDs of the cgroupfs driver.
    """
    found: dict[str, Path] = {}
    try:
        children = [child for child in pod_directory.iterdir() if child.is_dir()]
    except OSError:
        return found
    for child in children:
        match = _CONTAINER_SCOPE.match(child.name)
        if match:
            found[match.group(1)] = child
        elif _BARE_CONTAINER_ID.match(child.name):
            found[child.name] = child
    return found
