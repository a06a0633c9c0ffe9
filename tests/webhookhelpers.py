"""Helpers for tests that run ``temper webhook`` behind the real API server."""

import base64
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from temper.annotations import ORIGINAL_REQUESTS
from tests.kubehelpers import pod_manifest
from webhook.registration import CONFIGURATION_NAME


class WebhookProcess:
    """A ``temper webhook`` subprocess and the log file it writes."""

    def __init__(
        self, port: int, kubeconfig: Path, log_path: Path, extra_args: Sequence[str] = ()
    ) -> None:
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
                *extra_args,
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


def probe_pod() -> dict[str, Any]:
    return pod_manifest(f"probe-{uuid.uuid4().hex[:6]}", cpu_request="1")


def is_mutated(pod: k8s.V1Pod) -> bool:
    return ORIGINAL_REQUESTS in (pod.metadata.annotations or {})


def cpu_request(pod: k8s.V1Pod, index: int = 0) -> str:
    value: str = pod.spec.containers[index].resources.requests["cpu"]
    return value
