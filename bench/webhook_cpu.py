"""CPU time per admission call of the overcommit webhook, for one or more source trees.

Starts a dedicated local control plane (etcd, kube-apiserver; kube-scheduler stopped) and one
``temper webhook`` per ``--tree``, a checkout of this repository such as one made with
``git archive HEAD``. The webhooks do not register, so the API server never calls them; the
script plays the API server instead: it sends AdmissionReview requests to every webhook,
each on one keep-alive HTTPS connection (TLS 1.3, HTTP/1.1). Every review goes to each
webhook in turn, alternating which tree goes first, so all trees share the same load from
other processes. The pods in the reviews are what the API server hands a webhook: pods
created with ``dryRun=All`` in a namespace without the opt-in label, so defaulting and the
in-tree admission plugins have run. The CPU time of a webhook process is the sum over its
threads of the first field of ``/proc/<pid>/task/*/schedstat``, read before and after each
batch. The responses of the trees to the same review must be byte-identical; the script
stops if they are not.

The webhooks run under bench/gc_probe.py, which times every garbage collection. After the
batches, each webhook runs five full collections on request, which time what a full
collection costs in that process.

Run from the repository root::

    git archive --prefix=before/ HEAD | tar -x -C /tmp
    .venv/bin/python bench/webhook_cpu.py --tree /tmp/before --tree .

It prints Markdown tables: CPU time per call for every case and tree with its ratio to the
first tree, and the garbage collections per tree.
"""

import argparse
import http.client
import json
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.controlplane import LocalControlPlane
from temper.controlplane.client import AdminClient
from temper.controlplane.process import free_port

GC_PROBE = Path(__file__).with_name("gc_probe.py")
NAMESPACE = "bench"
READY_TIMEOUT_SECONDS = 120.0
FORCED_COLLECTIONS = 5


def container(name: str, cpu: str, limit: str | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": "64Mi"}}
    if limit is not None:
        resources["limits"] = {"cpu": limit, "memory": "64Mi"}
    return {"name": name, "image": f"registry.invalid/{name}:1", "resources": resources}


def one_container_pod() -> dict[str, Any]:
    return {"containers": [container("app", "1", "2")]}


def sidecar_pod() -> dict[str, Any]:
    sidecar = container("proxy", "500m")
    sidecar["restartPolicy"] = "Always"
    return {
        "initContainers": [container("setup", "1"), sidecar],
        "containers": [container("app", "2", "4"), container("worker", "250m")],
    }


CASES = {
    "pod with one container, scaled": one_container_pod,
    "pod with init, sidecar and two containers, scaled": sidecar_pod,
}


@dataclass
class Webhook:
    """One `temper webhook` process and what was measured on it."""

    tree: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    gc_path: Path
    connection: http.client.HTTPSConnection
    cpu_us_per_call: dict[str, list[float]] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """CPU time of all threads so far, from /proc/<pid>/task/*/schedstat."""
        total_ns = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                total_ns += int((task / "schedstat").read_text().split()[0])
            except FileNotFoundError:
                continue  # the thread ended between the listing and the read
        return total_ns / 1e9

    def post(self, body: bytes) -> bytes:
        self.connection.request(
            "POST", "/mutate", body=body, headers={"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.tree} /mutate: HTTP {response.status}: {data[:300]!r}")
        return data


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def insecure_context() -> ssl.SSLContext:
    # Each webhook generates its own CA; the bench only measures, it trusts loopback.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def admission_review(admin: AdminClient, name: str, spec: dict[str, Any]) -> bytes:
    """Return an AdmissionReview for a pod as the API server hands it to a webhook."""
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    pod = admin.create(f"/api/v1/namespaces/{NAMESPACE}/pods", manifest, dry_run=True)
    group_version = {"group": "", "version": "v1"}
    review = {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {**group_version, "kind": "Pod"},
            "resource": {**group_version, "resource": "pods"},
            "requestKind": {**group_version, "kind": "Pod"},
            "requestResource": {**group_version, "resource": "pods"},
            "name": name,
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {
                "username": "temper-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(review, separators=(",", ":")).encode()


def is_ready(port: int) -> bool:
    url = f"https://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2, context=insecure_context()) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def webhook(plane: LocalControlPlane, tree: Path, workdir: Path, index: int) -> Iterator[Webhook]:
    """Run ``temper webhook`` from ``tree`` against the plane until the context ends."""
    port = free_port()
    log_path = workdir / f"webhook-{index}.log"
    gc_path = workdir / f"gc-{index}.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "TEMPER_BENCH_GC_FILE": str(gc_path)}
    command = [
        sys.executable, str(GC_PROBE), "webhook",
        "--kubeconfig", str(plane.kubeconfig),
        "--port", str(port),
        "--log-level", "WARNING",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=tree, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not is_ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"webhook from {tree} not ready:\n{log_path.read_text()}")
            time.sleep(0.3)
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=insecure_context(), timeout=60
        )
        yield Webhook(tree, port, process, log_path, gc_path, connection)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_case(name: str, body: bytes, webhooks: list[Webhook], count: int) -> None:
    """Send one review ``count`` times to every webhook and record CPU per call.

    Each call goes to every webhook in turn, in an order that alternates per call, so that
    all of them run under the same load from other processes.
    """
    before = [hook.cpu_seconds() for hook in webhooks]
    for index in range(count):
        order = webhooks if index % 2 == 0 else webhooks[::-1]
        replies = {id(hook): hook.post(body) for hook in order}
        expected = replies[id(webhooks[0])]
        for hook in webhooks[1:]:
            if replies[id(hook)] != expected:
                raise SystemExit(
                    f"{name}: the responses of {webhooks[0].tree} and {hook.tree} differ:\n"
                    f"{expected[:400]!r}\n{replies[id(hook)][:400]!r}"
                )
    for hook, start_seconds in zip(webhooks, before, strict=True):
        used = hook.cpu_seconds() - start_seconds
        hook.cpu_us_per_call.setdefault(name, []).append(used / count * 1e6)


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs, {memory_gib:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def print_results(webhooks: list[Webhook], start: float, end: float) -> None:
    headers = [f"{hook.tree} us/call" for hook in webhooks]
    headers += [f"ratio {hook.tree} / {webhooks[0].tree}" for hook in webhooks[1:]]
    print("| Case | " + " | ".join(headers) + " |")
    print("|---" * (1 + len(headers)) + "|")
    for name in CASES:
        medians = [statistics.median(hook.cpu_us_per_call[name]) for hook in webhooks]
        cells = [f"{value:.0f}" for value in medians]
        cells += [f"{value / medians[0]:.2f}" for value in medians[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for hook in webhooks:
        for name in CASES:
            rounds = ", ".join(f"{value:.0f}" for value in hook.cpu_us_per_call[name])
            print(f"{hook.tree}, {name}: per round {rounds} us")
    print("\n| Tree | Collections while measuring | CPU total ms | Full collection CPU ms |")
    print("|---|---|---|---|")
    for hook in webhooks:
        records = json.loads(hook.gc_path.read_text())
        during = [cpu for begin, _wall, cpu, _gen in records["automatic"] if start <= begin <= end]
        forced = [cpu * 1000 for _begin, _wall, cpu, _gen in records["forced"]]
        print(
            f"| {hook.tree} | {len(during)} | {sum(during) * 1000:.1f} | "
            f"{statistics.median(forced) if forced else float('nan'):.2f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="source tree to run temper webhook from; repeat to compare (default: .)",
    )
    parser.add_argument("--calls", type=int, default=500, help="admission calls per batch")
    parser.add_argument("--rounds", type=int, default=5, help="batches per case and tree")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [Path(".")])]

    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="temper-bench-wh-") as directory, ExitStack() as stack:
        workdir = Path(directory)
        plane = LocalControlPlane(workdir / "controlplane")
        plane.start()
        stack.callback(plane.stop)
        plane.stop_scheduler()
        admin = plane.admin_client()
        admin.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        bodies = {
            name: admission_review(admin, f"pod-{index}", make_spec())
            for index, (name, make_spec) in enumerate(CASES.items())
        }
        webhooks = [
            stack.enter_context(webhook(plane, tree, workdir, index))
            for index, tree in enumerate(trees)
        ]
        for name, body in bodies.items():  # warm-up: connections, caches
            measure_case(name, body, webhooks, 20)
        for hook in webhooks:
            hook.cpu_us_per_call.clear()
        start = time.monotonic()
        for round_number in range(args.rounds):
            for name, body in bodies.items():
                measure_case(name, body, webhooks, args.calls)
            log(f"round {round_number + 1} of {args.rounds} done")
        end = time.monotonic()
        for _ in range(FORCED_COLLECTIONS):
            for hook in webhooks:
                hook.process.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
        stack.close()  # stops the webhooks, which write their GC records, and the plane
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
        print_results(webhooks, start, end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
