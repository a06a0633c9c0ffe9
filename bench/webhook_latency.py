"""Pod-create latency through a real kube-apiserver with and without the overcommit webhook.

Starts a dedicated local control plane (etcd, kube-apiserver) in a temporary directory and
``temper webhook`` as a subprocess that registers its MutatingWebhookConfiguration. The
kube-scheduler is stopped and the pods name a scheduler that does not exist, so only the API
server and the webhooks work on them. Three namespaces take part, one per arm, all on the
same API server:

- ``bench-baseline`` has no label, so no webhook is called;
- ``bench-noop-webhook`` selects ``bench/noopwebhook``, a Go webhook over HTTPS that adds one
  annotation and does nothing else. It measures what calling any mutating webhook costs a
  create, apart from the webhook's own work;
- ``bench-webhook`` carries the opt-in label of ``temper webhook``.

Each round runs one batch per arm, rotating which arm goes first. A batch creates its pods
one after another on one keep-alive HTTPS connection and times each POST from send to the
end of the response. The pods are deleted between batches, outside the timed part. One
unmeasured batch per arm warms up connections and caches first.

Run from the repository root::

    .venv/bin/python bench/webhook_latency.py --rounds 10 --batch 50

It prints the machine, the load average before and after, a Markdown table with p50 and p99
per arm, and their ratios: Temper's webhook against the baseline (the target) and against the
no-op webhook, and the no-op webhook against the baseline.
"""

import argparse
import base64
import http.client
import json
import math
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cpuprobe
import gofloors

from temper.annotations import ORIGINAL_REQUESTS, OVERCOMMIT_ENABLED, OVERCOMMIT_LABEL
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from temper.tls import CertificateAuthority

WEBHOOK_ARM = "webhook"
BASELINE_ARM = "baseline"
NOOP_ARM = "noop-webhook"
ARMS = (BASELINE_ARM, NOOP_ARM, WEBHOOK_ARM)
NAMESPACES = {
    WEBHOOK_ARM: "bench-webhook",
    BASELINE_ARM: "bench-baseline",
    NOOP_ARM: "bench-noop-webhook",
}
# The namespace label that selects the no-op webhook, and its configuration's name.
NOOP_LABEL = "bench.temper.codes/noop-webhook"
NOOP_CONFIGURATION = "temper-bench-noop-webhook"
# The annotation each webhook adds, which shows that it mutated a pod.
MUTATION_MARKS = {WEBHOOK_ARM: ORIGINAL_REQUESTS, NOOP_ARM: "bench.temper.codes/noop"}
# No scheduler serves this name, so kube-scheduler would leave the pods alone even if it ran.
SCHEDULER_NAME = "bench-unscheduled"
READY_TIMEOUT_SECONDS = 60.0


class ApiConnection:
    """One keep-alive HTTPS connection to the API server, authenticated as the admin."""

    def __init__(self, plane: LocalControlPlane) -> None:
        context = ssl.create_default_context(cafile=str(plane.ca_path))
        context.load_cert_chain(str(plane.pki_dir / "admin.crt"), str(plane.pki_dir / "admin.key"))
        self._connection = http.client.HTTPSConnection(
            "127.0.0.1", plane.apiserver_port, context=context, timeout=30
        )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request and return the status and the decoded body."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        self._connection.request(method, path, body=data, headers=headers)
        response = self._connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def close(self) -> None:
        self._connection.close()


def pod_manifest(name: str) -> dict[str, Any]:
    """Return a normal-tier pod with one container that the webhook scales from 1 CPU to 600m."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "64Mi"},
                        "limits": {"cpu": "2", "memory": "64Mi"},
                    },
                }
            ],
        },
    }


def run_batch(
    api: ApiConnection, arm: str, prefix: str, count: int, failed_open: list[str]
) -> list[float]:
    """Create ``count`` pods one after another; return each create's latency in seconds.

    A pod of a webhook arm that comes back unmutated means the API server's call to that
    webhook failed and the pod was admitted unchanged (failurePolicy Ignore). Its name and
    latency go into ``failed_open``, and its latency still counts.
    """
    namespace = NAMESPACES[arm]
    latencies = []
    for index in range(count):
        name = f"{prefix}-{index}"
        started = time.perf_counter()
        status, body = api.request(
            "POST", f"/api/v1/namespaces/{namespace}/pods", pod_manifest(name)
        )
        latency = time.perf_counter() - started
        latencies.append(latency)
        if status != 201:
            raise RuntimeError(f"creating pod {name} in {namespace}: HTTP {status}")
        annotations = body["metadata"].get("annotations") or {}
        marked = {arm for arm, key in MUTATION_MARKS.items() if key in annotations}
        if marked - {arm}:
            raise RuntimeError(f"pod {name} in {namespace} was mutated by the wrong webhook")
        if arm != BASELINE_ARM and arm not in marked:
            failed_open.append(f"{arm}: {name} after {latency * 1000:.0f} ms")
    return latencies


def delete_pods(api: ApiConnection, arm: str) -> None:
    """Delete every pod of the arm's namespace at once and wait until none is left."""
    path = f"/api/v1/namespaces/{NAMESPACES[arm]}/pods"
    status, _body = api.request("DELETE", f"{path}?gracePeriodSeconds=0")
    if status != 200:
        raise RuntimeError(f"deleting the pods of {NAMESPACES[arm]}: HTTP {status}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _status, listing = api.request("GET", f"{path}?limit=1")
        if not listing["items"]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"pods of {NAMESPACES[arm]} still present 30 s after deletion")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with ``fraction`` of values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def start_webhook(
    plane: LocalControlPlane, workdir: Path, options: list[str]
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``temper webhook`` with extra ``options`` and wait until it is ready."""
    port = free_port()
    log_path = workdir / "webhook.log"
    command = [
        sys.executable, "-m", "temper.cli", "webhook",
        "--kubeconfig", str(plane.kubeconfig),
        "--port", str(port),
        "--register-webhook-url", f"https://127.0.0.1:{port}/mutate",
        *options,
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # only to poll readiness; the API server verifies
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"temper webhook exited early:\n{log_path.read_text()[-2000:]}")
        try:
            url = f"https://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=2, context=insecure) as response:
                if response.status == 200:
                    return process, log_path
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"temper webhook not ready:\n{log_path.read_text()[-2000:]}")


def start_noop_webhook(api: ApiConnection, workdir: Path) -> subprocess.Popen[bytes]:
    """Build and start ``bench/noopwebhook`` (Go) and register it for the no-op namespace."""
    process, port, ca_pem = _run_noop_webhook(workdir)
    configuration = _noop_configuration(port, ca_pem)
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    status, body = api.request("POST", path, configuration)
    if status != 201:
        process.terminate()
        raise RuntimeError(f"registering the no-op webhook failed: HTTP {status}: {body}")
    return process


def _run_noop_webhook(workdir: Path) -> tuple[subprocess.Popen[bytes], int, bytes]:
    """Build the no-op webhook and start it with a fresh serving certificate."""
    binary = gofloors.build("noopwebhook", workdir)
    authority = CertificateAuthority("temper-bench-noop-webhook-ca")
    cert_path, key_path = authority.issue("noopwebhook", ip_addresses=("127.0.0.1",)).write(
        workdir / "noopwebhook-tls", "serving"
    )
    port = free_port()
    log_path = workdir / "noopwebhook.log"
    command = [
        str(binary), "--address", f"127.0.0.1:{port}",
        "--cert", str(cert_path), "--key", str(key_path),
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    return process, port, authority.cert_pem


def _noop_configuration(port: int, ca_pem: bytes) -> dict[str, Any]:
    """Return the MutatingWebhookConfiguration that sends the no-op namespace's pods to it."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NOOP_CONFIGURATION},
        "webhooks": [
            {
                "name": "noop.bench.temper.codes",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/mutate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {NOOP_LABEL: "enabled"}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }


def wait_for_webhook(api: ApiConnection, arm: str) -> None:
    """Wait until the API server sends the arm's pods to its webhook (dry-run creations)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    path = f"/api/v1/namespaces/{NAMESPACES[arm]}/pods?dryRun=All"
    while time.monotonic() < deadline:
        _status, body = api.request("POST", path, pod_manifest("probe"))
        if MUTATION_MARKS[arm] in (body["metadata"].get("annotations") or {}):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"the API server did not call the webhook of arm {arm} within "
        f"{READY_TIMEOUT_SECONDS:.0f} s; see the webhook logs in the work directory"
    )


def cpu_seconds(pid: int) -> float:
    """Return the CPU time all threads of a process have used, in seconds.

    The first field of ``/proc/<pid>/task/<tid>/schedstat`` is the time on CPU in
    nanoseconds, finer than the clock ticks of ``/proc/<pid>/stat``.
    """
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total_ns += int((task / "schedstat").read_text().split()[0])
    return total_ns / 1e9


def print_failure_logs(workdir: Path, plane: LocalControlPlane) -> None:
    """Print the webhook's log tail and the API server's last failed webhook calls."""
    webhook_log = workdir / "webhook.log"
    if webhook_log.exists():
        print("--- webhook.log (last 40 lines)", file=sys.stderr)
        print("\n".join(webhook_log.read_text().splitlines()[-40:]), file=sys.stderr)
    apiserver_log = plane.log_dir / "kube-apiserver.log"
    if apiserver_log.exists():
        print("--- kube-apiserver.log, lines about webhooks", file=sys.stderr)
        lines = apiserver_log.read_text(errors="replace").splitlines()
        calls = [line for line in lines if "failed calling webhook" in line.lower()]
        print("\n".join(calls[-20:]), file=sys.stderr)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="Rounds of one batch per arm")
    parser.add_argument("--batch", type=int, default=50, help="Pods created per batch")
    parser.add_argument(
        "--webhook-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="Extra option for temper webhook, e.g. --webhook-option=--log-level=WARNING; "
        "repeat for several",
    )
    args = parser.parse_args()

    print(f"machine: {cpuprobe.machine()}")
    print(f"load average before: {load_average()}", flush=True)
    samples: dict[str, list[float]] = {arm: [] for arm in ARMS}
    failed_open: list[str] = []
    with tempfile.TemporaryDirectory(prefix="temper-bench-webhook-") as directory:
        workdir = Path(directory)
        plane = LocalControlPlane(workdir / "controlplane")
        plane.start()
        webhook: subprocess.Popen[bytes] | None = None
        noop: subprocess.Popen[bytes] | None = None
        api: ApiConnection | None = None
        try:
            plane.stop_scheduler()
            api = ApiConnection(plane)
            for arm, namespace in NAMESPACES.items():
                labels = {
                    WEBHOOK_ARM: {OVERCOMMIT_LABEL: OVERCOMMIT_ENABLED},
                    NOOP_ARM: {NOOP_LABEL: "enabled"},
                }.get(arm, {})
                body = {"metadata": {"name": namespace, "labels": labels}}
                status, _ = api.request("POST", "/api/v1/namespaces", body)
                if status != 201:
                    raise RuntimeError(f"creating namespace {namespace}: HTTP {status}")
            webhook, _log_path = start_webhook(plane, workdir, args.webhook_option)
            noop = start_noop_webhook(api, workdir)
            wait_for_webhook(api, WEBHOOK_ARM)
            wait_for_webhook(api, NOOP_ARM)

            for arm in ARMS:
                run_batch(api, arm, "warmup", args.batch, failed_open)
                delete_pods(api, arm)
            webhook_cpu_before = cpu_seconds(webhook.pid)
            for round_index in range(args.rounds):
                # Each arm goes first, second and last equally often.
                shift = round_index % len(ARMS)
                order = [*ARMS[shift:], *ARMS[:shift]]
                for arm in order:
                    samples[arm] += run_batch(api, arm, f"r{round_index}", args.batch, failed_open)
                    delete_pods(api, arm)
            webhook_cpu = cpu_seconds(webhook.pid) - webhook_cpu_before
            if failed_open:
                print_failure_logs(workdir, plane)
        except RuntimeError:
            print_failure_logs(workdir, plane)
            raise
        finally:
            if api is not None:
                api.close()
            for process in (webhook, noop):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
            plane.stop()

    print(f"load average after: {load_average()}\n")
    print("| arm | creates | p50 ms | p99 ms | mean ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm in ARMS:
        values = samples[arm]
        print(
            f"| {arm} | {len(values)} | {percentile(values, 0.50) * 1000:.2f} | "
            f"{percentile(values, 0.99) * 1000:.2f} | {statistics.fmean(values) * 1000:.2f} | "
            f"{max(values) * 1000:.2f} |"
        )
    p50_ratio = percentile(samples[WEBHOOK_ARM], 0.5) / percentile(samples[BASELINE_ARM], 0.5)
    p99_ratio = percentile(samples[WEBHOOK_ARM], 0.99) / percentile(samples[BASELINE_ARM], 0.99)
    print(f"\np50 ratio (webhook / baseline): {p50_ratio:.2f}")
    print(f"p99 ratio (webhook / baseline): {p99_ratio:.2f} (target: at most 1.20)")

    def ratio(arm: str, over: str, quantile: float) -> float:
        return percentile(samples[arm], quantile) / percentile(samples[over], quantile)

    for quantile in (0.5, 0.99):
        print(
            f"p{quantile * 100:.0f} ratio (noop-webhook / baseline): "
            f"{ratio(NOOP_ARM, BASELINE_ARM, quantile):.2f}; (webhook / noop-webhook): "
            f"{ratio(WEBHOOK_ARM, NOOP_ARM, quantile):.2f}"
        )
    # Every create of the webhook arm is one admission call. Besides those, the process only
    # keeps its idle LimitRange watch open.
    per_call_us = webhook_cpu / len(samples[WEBHOOK_ARM]) * 1e6
    print(f"webhook process CPU time per admission call: {per_call_us:.0f} us")
    print(f"webhook-arm creates admitted unmutated (failed open): {len(failed_open)}")
    for entry in failed_open:
        print(f"  {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
