"""The webhook behind the real kube-apiserver: registration, mutation, dry run, fail-open.

One ``temper webhook`` subprocess serves the whole module on a free loopback port and
registers itself; the module deletes the MutatingWebhookConfiguration at the end.
"""

import base64
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
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
from temper.tiers import priority_class_manifests
from tests.kubehelpers import pod_manifest, wait_for
from webhook.registration import (
    CONFIGURATION_NAME,
    apply_webhook_configuration,
    webhook_configuration_manifest,
)

pytestmark = pytest.mark.controlplane


class WebhookProcess:
    """A ``temper webhook`` subprocess and the log file it writes."""

    def __init__(self, port: int, kubeconfig: Path, log_path: Path) -> None:
        self.port = port
        self.url = f"https://127.0.0.1:{port}/mutate"
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "temper.cli",
                "webhook",
                "--port",
                str(port),
                "--register-webhook-url",
                self.url,
                "--kubeconfig",
                str(kubeconfig),
                "--shutdown-timeout-seconds",
                "5",
                "--log-level",
                "DEBUG",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> int:
        """Send SIGTERM and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


def registered_ca(admission: k8s.AdmissionregistrationV1Api) -> bytes | None:
    try:
        configuration = admission.read_mutating_webhook_configuration(CONFIGURATION_NAME)
    except k8s.ApiException as error:
        if error.status == 404:
            return None
        raise
    bundle: str = configuration.webhooks[0].client_config.ca_bundle
    return base64.b64decode(bundle)


def is_ready(port: int, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/readyz", timeout=2, context=context
        ) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


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


def probe_pod() -> dict[str, Any]:
    return pod_manifest(f"probe-{uuid.uuid4().hex[:6]}", cpu_request="1")


def is_mutated(pod: k8s.V1Pod) -> bool:
    return ORIGINAL_REQUESTS in (pod.metadata.annotations or {})


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


def cpu_request(pod: k8s.V1Pod, index: int = 0) -> str:
    value: str = pod.spec.containers[index].resources.requests["cpu"]
    return value


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


def test_stopped_webhook_fails_open(
    core_api: k8s.CoreV1Api, labelled_namespace: str, webhook: WebhookProcess
) -> None:
    # Runs last in this module: it stops the shared webhook process.
    assert webhook.stop() == 0
    pod = core_api.create_namespaced_pod(labelled_namespace, pod_manifest("web", cpu_request="1"))
    assert cpu_request(pod) == "1"
    assert not is_mutated(pod)
