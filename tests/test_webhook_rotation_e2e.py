"""Serving-certificate rotation while the real API server keeps sending pod creations.

The webhook reads its certificate from files laid out like a Secret volume. A new leaf
certificate from the same CA is swapped in while a loop creates pods. Every pod must still be
mutated, and new TLS connections must get the new certificate.
"""

import os
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from kubernetes import client as k8s

from temper.annotations import OVERCOMMIT_ENABLED, OVERCOMMIT_LABEL
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from temper.tls import CertificateAuthority, KeyPair
from tests.kubehelpers import pod_manifest, wait_for
from tests.webhookhelpers import (
    WebhookProcess,
    cpu_request,
    is_mutated,
    is_ready,
    probe_pod,
    registered_ca,
)
from webhook.registration import CONFIGURATION_NAME

pytestmark = pytest.mark.controlplane

POD_COUNT = 40
ROTATE_AT_POD = 10
LOOP_DEADLINE_SECONDS = 120.0
RELOAD_INTERVAL_SECONDS = 0.2


class SecretVolume:
    """Files published the way the kubelet updates a Secret volume.

    Each key is a symlink to ``..data/<key>``, and ``..data`` is a symlink to a directory of
    the current files. A new version goes into a fresh directory and ``..data`` is replaced
    by one rename, so readers see either every old file or every new one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir()
        self._versions = 0

    def publish(self, files: Mapping[str, bytes]) -> None:
        self._versions += 1
        version = self.directory / f"..version-{self._versions}"
        version.mkdir()
        for name, content in files.items():
            (version / name).write_bytes(content)
        staging = self.directory / "..data_tmp"
        staging.symlink_to(version.name)
        os.replace(staging, self.directory / "..data")
        for name in files:
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)

    def path(self, name: str) -> Path:
        return self.directory / name


def serial_of(pair: KeyPair) -> int:
    return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


def served_serial(port: int, ca_pem: bytes) -> int:
    """Open a new TLS connection and return the serial of the certificate the server sent."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serving_files(authority: CertificateAuthority, pair: KeyPair) -> dict[str, bytes]:
    return {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": authority.cert_pem}


@pytest.fixture
def admission(api_client: k8s.ApiClient) -> Iterator[k8s.AdmissionregistrationV1Api]:
    admission = k8s.AdmissionregistrationV1Api(api_client)
    yield admission
    try:
        admission.delete_mutating_webhook_configuration(CONFIGURATION_NAME)
    except k8s.ApiException as error:
        if error.status != 404:
            raise


def test_rotation_keeps_every_pod_mutated(
    control_plane: LocalControlPlane,
    core_api: k8s.CoreV1Api,
    namespace: str,
    admission: k8s.AdmissionregistrationV1Api,
    tmp_path: Path,
) -> None:
    authority = CertificateAuthority("rotation-test-ca")
    first = authority.issue("temper-webhook", ip_addresses=("127.0.0.1",))
    second = authority.issue("temper-webhook", ip_addresses=("127.0.0.1",))
    volume = SecretVolume(tmp_path / "tls")
    volume.publish(serving_files(authority, first))
    tls_args = [
        "--tls-cert-file", str(volume.path("tls.crt")),
        "--tls-key-file", str(volume.path("tls.key")),
        "--tls-ca-file", str(volume.path("ca.crt")),
        "--tls-reload-interval-seconds", str(RELOAD_INTERVAL_SECONDS),
    ]  # fmt: skip
    port = free_port()
    process = WebhookProcess(port, control_plane.kubeconfig, tmp_path / "webhook.log", tls_args)
    try:
        try:
            wait_for(lambda: registered_ca(admission) == authority.cert_pem)
            context = ssl.create_default_context(cadata=authority.cert_pem.decode())
            wait_for(lambda: is_ready(port, context))
        except TimeoutError as error:
            raise AssertionError(f"webhook not ready; its log:\n{process.log_tail()}") from error
        core_api.patch_namespace(
            namespace, {"metadata": {"labels": {OVERCOMMIT_LABEL: OVERCOMMIT_ENABLED}}}
        )
        wait_for(
            lambda: is_mutated(
                core_api.create_namespaced_pod(namespace, probe_pod(), dry_run="All")
            )
        )
        serial_before = served_serial(port, authority.cert_pem)

        created: list[k8s.V1Pod] = []
        first_pod_after_switch: int | None = None
        deadline = time.monotonic() + LOOP_DEADLINE_SECONDS
        for index in range(POD_COUNT):
            assert time.monotonic() < deadline, f"only {index} pods created in time"
            if index == ROTATE_AT_POD:
                volume.publish(serving_files(authority, second))
            manifest = pod_manifest(f"pod-{index}", cpu_request="1")
            created.append(core_api.create_namespaced_pod(namespace, manifest))
            if (
                index >= ROTATE_AT_POD
                and first_pod_after_switch is None
                and served_serial(port, authority.cert_pem) == serial_of(second)
            ):
                first_pod_after_switch = index + 1
        serial_after = served_serial(port, authority.cert_pem)
    finally:
        process.stop()

    unmutated = [pod.metadata.name for pod in created if not is_mutated(pod)]
    assert unmutated == [], f"log:\n{process.log_tail()}"
    assert {cpu_request(pod) for pod in created} == {"600m"}
    assert serial_before == serial_of(first)
    assert serial_after == serial_of(second)
    # Creations went on after the server switched, not only before it.
    assert first_pod_after_switch is not None
    assert first_pod_after_switch < POD_COUNT
