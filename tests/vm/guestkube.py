"""A small Kubernetes API client for the guest checks, on the standard library alone.

The guest reaches the host's kube-apiserver through QEMU's user-mode network, whose gateway
address 10.0.2.2 forwards to the host's loopback interface. The API server's certificate
names ``localhost`` and ``127.0.0.1``, so the client connects to 10.0.2.2 and verifies the
certificate for the name ``localhost`` (``tls-server-name`` in the agent's kubeconfig).
"""

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any

JsonObject = dict[str, Any]


class KubeError(Exception):
    """A request to the API server failed; the message names the request and the reply."""


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, with the certificate checked for another name."""

    def __init__(self, host: str, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=30.0, context=context)
        self._server_name = server_name
        self._tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(raw, server_hostname=self._server_name)


class GuestKube:
    """JSON requests to one API server with a client certificate."""

    def __init__(self, connection: JsonObject) -> None:
        url = urllib.parse.urlsplit(connection["server"])
        if url.hostname is None or url.port is None:
            raise KubeError(f"server {connection['server']!r} needs a host and a port")
        self.host, self.port = url.hostname, url.port
        self.server_name = connection["tls_server_name"]
        self.context = ssl.create_default_context(cafile=connection["certificate_authority"])
        self.context.load_cert_chain(connection["client_certificate"], connection["client_key"])

    @classmethod
    def load(cls, path: str) -> "GuestKube":
        return cls(json.loads(Path(path).read_text()))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        """Send one request and return the decoded reply; raise KubeError on HTTP errors."""
        connection = _Connection(self.host, self.port, self.server_name, self.context)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as error:
            raise KubeError(f"{method} {path}: API server unreachable ({error!r})") from error
        finally:
            connection.close()
        if response.status >= 400:
            detail = data[:400].decode(errors="replace")
            raise KubeError(f"{method} {path}: HTTP {response.status}: {detail}")
        reply: JsonObject = json.loads(data) if data else {}
        return reply

    def get(self, path: str) -> JsonObject:
        return self.request("GET", path)

    def merge_patch(self, path: str, patch: JsonObject) -> JsonObject:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def create_pod(self, namespace: str, manifest: JsonObject) -> JsonObject:
        return self.request("POST", f"/api/v1/namespaces/{namespace}/pods", manifest)

    def delete_pod(self, namespace: str, name: str) -> None:
        body = {"gracePeriodSeconds": 0}
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    def node_annotation(self, node: str, key: str) -> str | None:
        annotations = self.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
        value = annotations.get(key)
        return str(value) if value is not None else None

    def wait_node_annotation(self, node: str, key: str, value: str, timeout: float) -> float | None:
        """Poll until the Node's annotation has ``value``; return the seconds it took or None."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.node_annotation(node, key) == value:
                return round(time.monotonic() - started, 1)
            time.sleep(0.3)
        return None


def pod_manifest(
    name: str,
    node: str,
    priority_class: str,
    requests: dict[str, str],
    limits: dict[str, str],
) -> JsonObject:
    """A one-container pod bound to ``node``, so no kube-scheduler is involved.

    The API server derives the QoS class from the resources: none gives BestEffort, limits
    equal to requests for CPU and memory give Guaranteed, anything else Burstable.
    """
    resources: JsonObject = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    container = {"name": "app", "image": "registry.invalid/app:1", "resources": resources}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "priorityClassName": priority_class, "containers": [container]},
    }
