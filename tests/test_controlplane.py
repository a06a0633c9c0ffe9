"""The real control plane: the harness starts it, and kube-scheduler binds pods to Nodes."""

import re
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from temper.controlplane import LocalControlPlane, binaries
from tests.kubehelpers import bound_node, create_nodes, delete_nodes, pod_manifest, wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.controlplane


def test_build_script_versions_match_python() -> None:
    script = (REPO_ROOT / binaries.BUILD_SCRIPT).read_text()
    for variable, expected in (
        ("KUBERNETES_VERSION", binaries.KUBERNETES_VERSION),
        ("ETCD_VERSION", binaries.ETCD_VERSION),
        ("HELM_VERSION", binaries.HELM_VERSION),
    ):
        match = re.search(rf"^{variable}=(\S+)$", script, re.MULTILINE)
        assert match is not None, f"{variable} missing from the build script"
        assert match.group(1) == expected


def test_apiserver_reports_built_version(core_api: k8s.CoreV1Api) -> None:
    version = k8s.VersionApi(core_api.api_client).get_code()
    assert version.git_version == binaries.KUBERNETES_VERSION


def test_scheduler_binds_pod_to_created_node(
    control_plane: LocalControlPlane, core_api: k8s.CoreV1Api, namespace: str
) -> None:
    node = f"bind-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node], labels={"temper.codes/test": node})
    try:
        core_api.create_namespaced_pod(
            namespace,
            pod_manifest("web", node_selector={"temper.codes/test": node}),
        )
        assert wait_for(lambda: bound_node(core_api, namespace, "web")) == node
        pod = core_api.read_namespaced_pod("web", namespace)
        scheduled = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        assert scheduled[0].status == "True"
    finally:
        delete_nodes(core_api, [node])


def test_rbac_denies_unprivileged_user(control_plane: LocalControlPlane) -> None:
    # An anonymous request may read /readyz but not list pods: RBAC is on.
    configuration = k8s.Configuration()
    configuration.host = control_plane.server
    configuration.ssl_ca_cert = str(control_plane.ca_path)
    with k8s.ApiClient(configuration) as anonymous, pytest.raises(k8s.ApiException) as raised:
        k8s.CoreV1Api(anonymous).list_pod_for_all_namespaces()
    assert raised.value.status in (401, 403)
