"""Shared fixtures: a real control plane (etcd, kube-apiserver, kube-scheduler) per session."""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from temper.controlplane import LocalControlPlane

REPO_ROOT = Path(__file__).resolve().parent.parent
FAILED_LOG_DIR = REPO_ROOT / "test-logs"

_failures: list[str] = []

# The VM tests boot Debian's sched_ext kernel under QEMU's emulation, which takes several
# minutes per session; they run only with TEMPER_VM_TESTS=1 (see README.md).
collect_ignore = [] if os.environ.get("TEMPER_VM_TESTS") == "1" else ["vm"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        _failures.append(item.nodeid)
    return report


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    """etcd, kube-apiserver and kube-scheduler (no extender) on loopback for the session.

    Logs are copied to ``test-logs/`` when any test of the session failed.
    """
    workdir = tmp_path_factory.mktemp("controlplane")
    plane = LocalControlPlane(workdir)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        if _failures:
            target = FAILED_LOG_DIR / workdir.name
            shutil.copytree(plane.log_dir, target, dirs_exist_ok=True)
            print(f"\ncontrol-plane logs of the failed session: {target}")


@pytest.fixture(scope="session")
def api_client(control_plane: LocalControlPlane) -> Iterator[k8s.ApiClient]:
    """Official Kubernetes client logged in as the admin (group system:masters)."""
    client = k8s_config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def core_api(api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    """CoreV1Api on the session's control plane."""
    return k8s.CoreV1Api(api_client)


@pytest.fixture
def namespace(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test; pods in it are force-deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core_api.create_namespace({"metadata": {"name": name}})
    yield name
    # No kubelet or namespace controller runs, so delete pods with grace period 0 and
    # leave the namespace Terminating.
    core_api.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core_api.delete_namespace(name)
