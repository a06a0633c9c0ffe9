"""Pod cgroup paths for both drivers and versions, checked against real cgroup trees."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cgroups import (
    CgroupLayout,
    CgroupVersion,
    container_cgroup_name,
    container_cgroups,
    detect_cgroup_driver,
    detect_cgroup_version,
    pod_cgroup_relative_path,
)
from agent.podinfo import QosClass, pod_info, qos_class
from agent.settings import CgroupDriver

UID = "4f1b2c3d-0000-4a5b-8c6d-7e8f9a0b1c2d"
CONTAINER_ID = "ab" * 32
V1_ROOT = Path("/sys/fs/cgroup")
V2_MOUNT = Path("/sys/fs/cgroup/unified")


@pytest.mark.parametrize(
    ("driver", "qos", "expected"),
    [
        (CgroupDriver.SYSTEMD, QosClass.GUARANTEED,
         "kubepods.slice/kubepods-pod4f1b2c3d_0000_4a5b_8c6d_7e8f9a0b1c2d.slice"),
        (CgroupDriver.SYSTEMD, QosClass.BURSTABLE,
         "kubepods.slice/kubepods-burstable.slice/"
         "kubepods-burstable-pod4f1b2c3d_0000_4a5b_8c6d_7e8f9a0b1c2d.slice"),
        (CgroupDriver.SYSTEMD, QosClass.BEST_EFFORT,
         "kubepods.slice/kubepods-besteffort.slice/"
         "kubepods-besteffort-pod4f1b2c3d_0000_4a5b_8c6d_7e8f9a0b1c2d.slice"),
        (CgroupDriver.CGROUPFS, QosClass.GUARANTEED, f"kubepods/pod{UID}"),
        (CgroupDriver.CGROUPFS, QosClass.BURSTABLE, f"kubepods/burstable/pod{UID}"),
        (CgroupDriver.CGROUPFS, QosClass.BEST_EFFORT, f"kubepods/besteffort/pod{UID}"),
    ],
)  # fmt: skip
def test_pod_cgroup_relative_path(driver: CgroupDriver, qos: QosClass, expected: str) -> None:
    assert pod_cgroup_relative_path(UID, qos, driver) == expected


@pytest.mark.parametrize(
    ("container_id", "driver", "expected"),
    [
        (f"containerd://{CONTAINER_ID}", CgroupDriver.SYSTEMD,
         f"cri-containerd-{CONTAINER_ID}.scope"),
        (f"cri-o://{CONTAINER_ID}", CgroupDriver.SYSTEMD, f"crio-{CONTAINER_ID}.scope"),
        (f"containerd://{CONTAINER_ID}", CgroupDriver.CGROUPFS, CONTAINER_ID),
        (CONTAINER_ID, CgroupDriver.SYSTEMD, f"cri-containerd-{CONTAINER_ID}.scope"),
    ],
)  # fmt: skip
def test_container_cgroup_name(container_id: str, driver: CgroupDriver, expected: str) -> None:
    assert container_cgroup_name(container_id, driver) == expected


def resources(cpu: str | None, memory: str | None, limits: bool) -> dict[str, dict[str, str]]:
    values = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    result = {"requests": dict(values)}
    if limits:
        result["limits"] = dict(values)
    return result


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        ([resources("1", "1Gi", limits=True)], QosClass.GUARANTEED),
        ([resources("1", "1Gi", limits=False)], QosClass.BURSTABLE),
        ([resources("1", None, limits=True)], QosClass.BURSTABLE),
        ([{}], QosClass.BEST_EFFORT),
        ([resources("1", "1Gi", limits=True), {}], QosClass.BURSTABLE),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}], QosClass.GUARANTEED),
    ],
)
def test_qos_class_computed(containers: list[dict[str, object]], expected: QosClass) -> None:
    pod = {"spec": {"containers": [{"name": f"c{i}", "resources": r} for i, r in
                                   enumerate(containers)]}}  # fmt: skip
    assert qos_class(pod) is expected


def test_qos_class_prefers_status() -> None:
    pod = {"spec": {"containers": [{}]}, "status": {"qosClass": "Guaranteed"}}
    assert qos_class(pod) is QosClass.GUARANTEED


def test_static_pod_uses_config_hash() -> None:
    pod = {
        "metadata": {
            "name": "etcd-node1",
            "namespace": "kube-system",
            "uid": "api-uid",
            "annotations": {"kubernetes.io/config.hash": "0123456789abcdef"},
        },
        "spec": {"containers": [{}]},
    }
    info = pod_info(pod)
    assert info.uid == "api-uid"
    assert info.cgroup_uid == "0123456789abcdef"


@pytest.fixture
def real_tree() -> Iterator[list[Path]]:
    """Remove the directories a test created in the real hierarchies, deepest first."""
    created: list[Path] = []
    yield created
    for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
        if path.exists():
            path.rmdir()


def make_dirs(base: Path, relative: str, created: list[Path]) -> Path:
    path = base
    for part in relative.split("/"):
        path = path / part
        if not path.exists():
            path.mkdir()
            created.append(path)
    return path


@pytest.mark.root
@pytest.mark.parametrize("driver", [CgroupDriver.SYSTEMD, CgroupDriver.CGROUPFS])
@pytest.mark.parametrize("qos", list(QosClass))
def test_v1_real_tree_resolves(driver: CgroupDriver, qos: QosClass, real_tree: list[Path]) -> None:
    uid = str(uuid.uuid4())
    relative = pod_cgroup_relative_path(uid, qos, driver)
    pod_dir = make_dirs(V1_ROOT / "cpu", relative, real_tree)
    container = make_dirs(pod_dir, container_cgroup_name(f"containerd://{CONTAINER_ID}", driver),
                          real_tree)  # fmt: skip
    layout = CgroupLayout(V1_ROOT, detect_cgroup_version(V1_ROOT), driver)
    assert layout.version is CgroupVersion.V1
    assert layout.pod_directory(uid, qos) == pod_dir
    # The kernel created the controller files: this is a real cgroup, not a plain directory.
    assert (pod_dir / "cpu.shares").exists()
    assert detect_cgroup_driver(V1_ROOT, CgroupVersion.V1) is not None
    assert container_cgroups(pod_dir) == {CONTAINER_ID: container}


@pytest.mark.root
@pytest.mark.skipif(not (V2_MOUNT / "cgroup.controllers").exists(), reason="no cgroup2 mount")
@pytest.mark.parametrize("qos", list(QosClass))
def test_v2_real_tree_resolves(qos: QosClass, real_tree: list[Path]) -> None:
    uid = str(uuid.uuid4())
    driver = CgroupDriver.SYSTEMD
    relative = pod_cgroup_relative_path(uid, qos, driver)
    pod_dir = make_dirs(V2_MOUNT, relative, real_tree)
    containerd = make_dirs(pod_dir, f"cri-containerd-{CONTAINER_ID}.scope", real_tree)
    crio_id = "cd" * 32
    crio = make_dirs(pod_dir, f"crio-{crio_id}.scope", real_tree)
    make_dirs(pod_dir, f"crio-conmon-{crio_id}.scope", real_tree)
    layout = CgroupLayout(V2_MOUNT, detect_cgroup_version(V2_MOUNT), driver)
    assert layout.version is CgroupVersion.V2
    assert layout.pod_directory(uid, qos) == pod_dir
    assert (pod_dir / "cgroup.procs").exists()
    assert detect_cgroup_driver(V2_MOUNT, CgroupVersion.V2) is CgroupDriver.SYSTEMD
    assert container_cgroups(pod_dir) == {CONTAINER_ID: containerd, crio_id: crio}
    assert layout.layered_prefix(uid, qos) == relative + "/"


def test_detect_driver_none_without_kubepods(tmp_path: Path) -> None:
    assert detect_cgroup_driver(tmp_path, CgroupVersion.V2) is None
