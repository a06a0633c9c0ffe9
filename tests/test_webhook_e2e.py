"""The webhook behind the real kube-apiserver: registration, mutation, dry run, LimitRanges,
revert and fail-open.

One ``temper webhook`` subprocess serves the whole module on a free loopback port and
registers itself; the module deletes the MutatingWebhookConfiguration at the end.
"""

import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from temper.annotations import (
    ORIGINAL_REQUESTS,
    OVERCOMMIT_ENABLED,
    OVERCOMMIT_LABEL,
    OriginalRequests,
)
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from temper.kube import KubeClient
from temper.tiers import TIER_SPECS, Tier, priority_class_manifests
from tests.kubehelpers import pod_manifest, wait_for
from tests.webhookhelpers import (
    WebhookProcess,
    cpu_request,
    is_mutated,
    is_ready,
    probe_pod,
    registered_ca,
)
from webhook.registration import (
    CONFIGURATION_NAME,
    TIMEOUT_SECONDS,
    WEBHOOK_NAME,
    apply_webhook_configuration,
    webhook_configuration_manifest,
)

pytestmark = pytest.mark.controlplane

# Time a pod creation may take beyond the webhook's timeoutSeconds when the webhook is down.
FAIL_OPEN_MARGIN_SECONDS = 2.0


@pytest.fixture(scope="module")
def admission(api_client: k8s.ApiClient) -> k8s.AdmissionregistrationV1Api:
    return k8s.AdmissionregistrationV1Api(api_client)


@pytest.fixture(scope="module")
def priority_classes(api_client: k8s.ApiClient) -> None:
    scheduling = k8s.SchedulingV1Api(api_client)
    for manifest in priority_class_manifests():
        try:
            scheduling.create_priority_class(manifest)
        except k8s.ApiException as error:
            if error.status != 409:
                raise


@pytest.fixture(scope="module")
def webhook(
    control_plane: LocalControlPlane,
    admission: k8s.AdmissionregistrationV1Api,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebhookProcess]:
    log_path = tmp_path_factory.mktemp("webhook") / "webhook.log"
    process = WebhookProcess(free_port(), control_plane.kubeconfig, log_path)
    try:
        try:
            ca_pem = wait_for(lambda: registered_ca(admission))
            context = ssl.create_default_context(cadata=ca_pem.decode())
            wait_for(lambda: is_ready(process.port, context))
        except TimeoutError as error:
            raise AssertionError(f"webhook not ready; its log:\n{process.log_tail()}") from error
        yield process
    finally:
        process.stop()
        try:
            admission.delete_mutating_webhook_configuration(CONFIGURATION_NAME)
        except k8s.ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def labelled_namespace(
    core_api: k8s.CoreV1Api, namespace: str, webhook: WebhookProcess, priority_classes: None
) -> str:
    """A namespace that opted in, once the API server sends its pods to the webhook."""
    core_api.patch_namespace(
        namespace, {"metadata": {"labels": {OVERCOMMIT_LABEL: OVERCOMMIT_ENABLED}}}
    )
    # The API server learns about new webhook configurations and namespace labels from
    # informers, about a second late: dry-run creations show when the webhook applies.
    wait_for(
        lambda: is_mutated(core_api.create_namespaced_pod(namespace, probe_pod(), dry_run="All"))
    )
    return namespace


def test_configuration_registered(
    webhook: WebhookProcess, admission: k8s.AdmissionregistrationV1Api
) -> None:
    configuration = admission.read_mutating_webhook_configuration(CONFIGURATION_NAME)
    hook = configuration.webhooks[0]
    assert hook.client_config.url == webhook.url
    assert hook.failure_policy == "Ignore"
    assert hook.side_effects == "None"
    assert hook.timeout_seconds == 5
    assert hook.admission_review_versions == ["v1"]
    assert hook.reinvocation_policy == "IfNeeded"
    assert hook.match_policy == "Equivalent"
    assert hook.namespace_selector.match_labels == {OVERCOMMIT_LABEL: OVERCOMMIT_ENABLED}
    assert hook.rules[0].operations == ["CREATE"]
    assert hook.rules[0].resources == ["pods"]


def test_labelled_namespace_pod_scaled(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    manifest = pod_manifest("web", cpu_request="1", cpu_limit="2")
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
    assert cpu_request(pod) == "600m"
    assert pod.spec.containers[0].resources.limits["cpu"] == "2"
    original = OriginalRequests.decode(pod.metadata.annotations[ORIGINAL_REQUESTS])
    assert original.containers == {"app": "1"}


def test_unlabelled_namespace_untouched(
    core_api: k8s.CoreV1Api, namespace: str, webhook: WebhookProcess
) -> None:
    pod = core_api.create_namespaced_pod(namespace, pod_manifest("web", cpu_request="1"))
    assert cpu_request(pod) == "1"
    assert not is_mutated(pod)


def test_critical_pod_untouched(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    manifest = pod_manifest("db", cpu_request="1", priority_class="temper-critical")
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
    assert cpu_request(pod) == "1"
    assert not is_mutated(pod)


WEBHOOK_LABELS = f'name="{WEBHOOK_NAME}",operation="CREATE"'


def webhook_call_counts(api_client: k8s.ApiClient) -> tuple[float, float]:
    """Return the API server's count of calls to the webhook and of calls skipped by its
    matchConditions, from kube-apiserver's /metrics."""
    response = api_client.call_api("GET", f"{api_client.configuration.host}/metrics")
    text = response.read().decode()
    calls = skipped = 0.0
    for line in text.splitlines():
        if WEBHOOK_LABELS not in line:
            continue
        if line.startswith("apiserver_admission_webhook_request_total{"):
            calls += float(line.rsplit(" ", 1)[1])
        elif line.startswith("apiserver_admission_match_condition_exclusions_total{"):
            skipped += float(line.rsplit(" ", 1)[1])
    return calls, skipped


@pytest.fixture
def urgent_class(api_client: k8s.ApiClient) -> Iterator[str]:
    """A PriorityClass that is not a Temper class, with a value in the critical tier."""
    scheduling = k8s.SchedulingV1Api(api_client)
    name = "test-urgent"
    scheduling.create_priority_class(
        {"metadata": {"name": name}, "value": TIER_SPECS[Tier.CRITICAL].value + 50_000}
    )
    yield name
    scheduling.delete_priority_class(name)


def test_match_conditions_skip_unchanged_pods(
    api_client: k8s.ApiClient, core_api: k8s.CoreV1Api, labelled_namespace: str, urgent_class: str
) -> None:
    already = pod_manifest("already", cpu_request="1")
    already["metadata"]["annotations"] = {
        ORIGINAL_REQUESTS: OriginalRequests(containers={"app": "1"}).encode()
    }
    skipped_pods = [
        pod_manifest("critical", cpu_request="1", priority_class="temper-critical"),
        pod_manifest("urgent", cpu_request="1", priority_class=urgent_class),
        already,
    ]
    for manifest in skipped_pods:
        calls, skipped = webhook_call_counts(api_client)
        pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
        name = manifest["metadata"]["name"]
        assert cpu_request(pod) == "1", name
        assert webhook_call_counts(api_client) == (calls, skipped + 1), name

    # A pod that the webhook changes still goes to it, once. The API server's reinvocation
    # round after the patch evaluates the conditions again, and the now annotated pod counts
    # as an exclusion there, so only the calls are compared.
    calls, _skipped = webhook_call_counts(api_client)
    pod = core_api.create_namespaced_pod(
        labelled_namespace, pod_manifest("web", cpu_request="1", priority_class="temper-low")
    )
    assert cpu_request(pod) == "400m"
    assert webhook_call_counts(api_client)[0] == calls + 1


def test_batch_tier_pod_scaled(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    manifest = pod_manifest("batch", cpu_request="1", priority_class="temper-background")
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
    assert cpu_request(pod) == "250m"


def test_guaranteed_pod_untouched(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    manifest = pod_manifest("api", cpu_request="1", cpu_limit="1")
    resources = manifest["spec"]["containers"][0]["resources"]
    resources["requests"]["memory"] = "64Mi"
    resources["limits"]["memory"] = "64Mi"
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
    assert cpu_request(pod) == "1"
    assert pod.status.qos_class == "Guaranteed"
    assert not is_mutated(pod)


def test_dry_run_mutates_without_persisting(
    core_api: k8s.CoreV1Api, labelled_namespace: str
) -> None:
    manifest = pod_manifest("preview", cpu_request="500m")
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest, dry_run="All")
    assert cpu_request(pod) == "300m"
    assert is_mutated(pod)
    with pytest.raises(k8s.ApiException) as raised:
        core_api.read_namespaced_pod("preview", labelled_namespace)
    assert raised.value.status == 404


async def test_registration_updates_existing(
    control_plane: LocalControlPlane,
    webhook: WebhookProcess,
    admission: k8s.AdmissionregistrationV1Api,
) -> None:
    ca_pem = registered_ca(admission)
    manifest = webhook_configuration_manifest(url=webhook.url, ca_bundle_pem=ca_pem)
    client = await KubeClient.connect(str(control_plane.kubeconfig))
    try:
        applied = await apply_webhook_configuration(client, manifest)
    finally:
        await client.close()
    assert applied["metadata"]["name"] == CONFIGURATION_NAME
    assert applied["webhooks"][0]["clientConfig"]["url"] == webhook.url


def test_limits_only_pod_untouched(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    # Defaulting copies the limit into the request before admission, and the webhook keeps a
    # request equal to its limit.
    manifest = pod_manifest("web", cpu_request=None, cpu_limit="2")
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
    assert cpu_request(pod) == "2"
    assert pod.spec.containers[0].resources.limits["cpu"] == "2"
    assert not is_mutated(pod)


def sidecar_pod_manifest(name: str) -> dict[str, Any]:
    manifest = pod_manifest(name, cpu_request="2")
    manifest["spec"]["initContainers"] = [
        {
            "name": "setup",
            "image": "registry.invalid/setup:1",
            "resources": {"requests": {"cpu": "1"}},
        },
        {
            "name": "proxy",
            "image": "registry.invalid/proxy:1",
            "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "500m"}},
        },
    ]
    return manifest


def init_cpu_request(pod: k8s.V1Pod, index: int) -> str:
    value: str = pod.spec.init_containers[index].resources.requests["cpu"]
    return value


def test_init_and_sidecar_containers_scaled(
    core_api: k8s.CoreV1Api, labelled_namespace: str
) -> None:
    pod = core_api.create_namespaced_pod(labelled_namespace, sidecar_pod_manifest("meshed"))
    assert init_cpu_request(pod, 0) == "600m"
    assert init_cpu_request(pod, 1) == "300m"
    assert pod.spec.init_containers[1].restart_policy == "Always"
    assert cpu_request(pod) == "1200m"
    original = OriginalRequests.decode(pod.metadata.annotations[ORIGINAL_REQUESTS])
    assert original.init_containers == {"setup": "1", "proxy": "500m"}
    assert original.containers == {"app": "2"}


def add_limit_range(core_api: k8s.CoreV1Api, namespace: str, item: dict[str, Any]) -> None:
    core_api.create_namespaced_limit_range(
        namespace, {"metadata": {"name": "cpu"}, "spec": {"limits": [item]}}
    )


def dry_run(core_api: k8s.CoreV1Api, namespace: str, manifest: dict[str, Any]) -> k8s.V1Pod:
    return core_api.create_namespaced_pod(namespace, manifest, dry_run="All")


def probe_request_unless_rejected(core_api: k8s.CoreV1Api, namespace: str) -> str | None:
    """Return the CPU request of a dry-run probe pod, or None when LimitRanger rejects it.

    LimitRanger looks a new LimitRange up at once, but the webhook learns about it from its
    watch a moment later. In between, the webhook scales the probe below the new minimum and
    LimitRanger rejects the pod with 403.
    """
    try:
        return cpu_request(dry_run(core_api, namespace, probe_pod()))
    except k8s.ApiException as error:
        if error.status != 403:
            raise
        return None


def test_limit_range_minimum_clamps(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    add_limit_range(core_api, labelled_namespace, {"type": "Container", "min": {"cpu": "700m"}})
    wait_for(lambda: probe_request_unless_rejected(core_api, labelled_namespace) == "700m")
    # LimitRanger validates after the webhook: 600m would have been rejected.
    pod = core_api.create_namespaced_pod(labelled_namespace, pod_manifest("web", cpu_request="1"))
    assert cpu_request(pod) == "700m"
    assert is_mutated(pod)


def test_limit_range_ratio_clamps(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    add_limit_range(
        core_api,
        labelled_namespace,
        {"type": "Container", "maxLimitRequestRatio": {"cpu": "1500m"}},
    )
    manifest = pod_manifest("web", cpu_request="1", cpu_limit="1200m")
    wait_for(lambda: cpu_request(dry_run(core_api, labelled_namespace, manifest)) == "800m")
    pod = core_api.create_namespaced_pod(labelled_namespace, manifest)
    assert cpu_request(pod) == "800m"
    assert pod.spec.containers[0].resources.limits["cpu"] == "1200m"


def test_limit_range_pod_minimum_skips(core_api: k8s.CoreV1Api, labelled_namespace: str) -> None:
    add_limit_range(core_api, labelled_namespace, {"type": "Pod", "min": {"cpu": "800m"}})
    wait_for(lambda: not is_mutated(dry_run(core_api, labelled_namespace, probe_pod())))
    pod = core_api.create_namespaced_pod(labelled_namespace, pod_manifest("web", cpu_request="1"))
    assert cpu_request(pod) == "1"
    assert not is_mutated(pod)


def run_revert(control_plane: LocalControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "temper.cli", "webhook", "revert"]
    command += ["--kubeconfig", str(control_plane.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def table_row(output: str, namespace: str, pod: str, container: str) -> list[str]:
    for line in output.splitlines():
        cells = line.split()
        if cells[:3] == [namespace, pod, container]:
            return cells
    raise AssertionError(f"no row for {namespace}/{pod} {container} in:\n{output}")


def test_revert_dry_run_lists_pods(
    core_api: k8s.CoreV1Api, labelled_namespace: str, control_plane: LocalControlPlane
) -> None:
    manifest = pod_manifest("web", cpu_request="1", cpu_limit="2")
    core_api.create_namespaced_pod(labelled_namespace, manifest)
    result = run_revert(control_plane, "--all-namespaces")
    assert result.returncode == 0, result.stderr
    row = table_row(result.stdout, labelled_namespace, "web", "app")
    assert row[3:5] == ["600m", "1"]
    assert "would resize" in " ".join(row[5:])
    assert "nothing changed" in result.stdout
    assert cpu_request(core_api.read_namespaced_pod("web", labelled_namespace)) == "600m"


def test_revert_apply_restores_requests(
    core_api: k8s.CoreV1Api, labelled_namespace: str, control_plane: LocalControlPlane
) -> None:
    core_api.create_namespaced_pod(labelled_namespace, pod_manifest("web", cpu_request="1"))
    core_api.create_namespaced_pod(labelled_namespace, sidecar_pod_manifest("meshed"))
    result = run_revert(control_plane, "--namespace", labelled_namespace, "--apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reverted 2 pods, 0 failed" in result.stdout

    # No kubelet runs, so nothing actuates the resize: the spec the API server stores is
    # what changed.
    web = core_api.read_namespaced_pod("web", labelled_namespace)
    assert cpu_request(web) == "1"
    assert not is_mutated(web)
    meshed = core_api.read_namespaced_pod("meshed", labelled_namespace)
    assert cpu_request(meshed) == "2"
    assert init_cpu_request(meshed, 0) == "1"
    assert init_cpu_request(meshed, 1) == "500m"
    assert not is_mutated(meshed)

    again = run_revert(control_plane, "--namespace", labelled_namespace, "--apply")
    assert again.returncode == 0, again.stderr
    assert "nothing to revert" in again.stdout


def test_revert_reports_rejected_resize(
    core_api: k8s.CoreV1Api, namespace: str, control_plane: LocalControlPlane
) -> None:
    # Restoring 1 CPU would make requests equal limits, so the pod would turn Guaranteed,
    # and resize must not change the QoS class.
    manifest = pod_manifest("api", cpu_request="500m", cpu_limit="1")
    resources = manifest["spec"]["containers"][0]["resources"]
    resources["requests"]["memory"] = "64Mi"
    resources["limits"]["memory"] = "64Mi"
    record = OriginalRequests(containers={"app": "1"}).encode()
    manifest["metadata"]["annotations"] = {ORIGINAL_REQUESTS: record}
    core_api.create_namespaced_pod(namespace, manifest)

    result = run_revert(control_plane, "--namespace", namespace, "--apply")
    assert result.returncode == 1, result.stdout + result.stderr
    row = " ".join(table_row(result.stdout, namespace, "api", "app"))
    assert "resize rejected (HTTP 422)" in row
    assert "QOS" in row
    pod = core_api.read_namespaced_pod("api", namespace)
    assert cpu_request(pod) == "500m"
    assert is_mutated(pod)


def test_stopped_webhook_fails_open(
    core_api: k8s.CoreV1Api, labelled_namespace: str, webhook: WebhookProcess
) -> None:
    # Runs after the tests that need the webhook: it stops the shared webhook process.
    assert webhook.stop() == 0
    started = time.monotonic()
    pod = core_api.create_namespaced_pod(labelled_namespace, pod_manifest("web", cpu_request="1"))
    elapsed_seconds = time.monotonic() - started
    assert cpu_request(pod) == "1"
    assert not is_mutated(pod)
    assert elapsed_seconds < TIMEOUT_SECONDS + FAIL_OPEN_MARGIN_SECONDS


class StalledServer:
    """A loopback TCP listener that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._connections: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _address = self._listener.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)
            self.accepted += 1

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()
        for connection in self._connections:
            connection.close()
        self._listener.close()


def test_stalled_webhook_fails_open_within_timeout(
    core_api: k8s.CoreV1Api,
    namespace: str,
    admission: k8s.AdmissionregistrationV1Api,
    webhook: WebhookProcess,
) -> None:
    # Points the module's configuration at a server that never responds, so the API server
    # waits the whole timeoutSeconds and then admits the pod unchanged.
    stalled = StalledServer()
    try:
        configuration = admission.read_mutating_webhook_configuration(CONFIGURATION_NAME)
        configuration.webhooks[0].client_config.url = f"https://127.0.0.1:{stalled.port}/mutate"
        admission.replace_mutating_webhook_configuration(CONFIGURATION_NAME, configuration)
        core_api.patch_namespace(
            namespace, {"metadata": {"labels": {OVERCOMMIT_LABEL: OVERCOMMIT_ENABLED}}}
        )
        wait_for(lambda: dry_run(core_api, namespace, probe_pod()) and stalled.accepted > 0)

        started = time.monotonic()
        pod = core_api.create_namespaced_pod(namespace, pod_manifest("web", cpu_request="1"))
        elapsed_seconds = time.monotonic() - started
    finally:
        stalled.close()
    assert cpu_request(pod) == "1"
    assert not is_mutated(pod)
    assert elapsed_seconds >= TIMEOUT_SECONDS - 0.5
    assert elapsed_seconds < TIMEOUT_SECONDS + FAIL_OPEN_MARGIN_SECONDS
