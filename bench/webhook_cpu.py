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

import json
import ssl
import statistics
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cpuprobe

from temper.controlplane import LocalControlPlane
from temper.controlplane.client import AdminClient

NAMESPACE = "bench"
READY_TIMEOUT_SECONDS = 120.0


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
def webhook(
    plane: LocalControlPlane, tree: Path, workdir: Path, index: int
) -> Iterator[cpuprobe.ProbedServer]:
    """Run ``temper webhook`` from ``tree`` against the plane until the context ends."""
    with cpuprobe.probed_server(
        "webhook", plane, tree, workdir, index, ssl_context=insecure_context()
    ) as server:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not is_ready(server.port):
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"webhook from {tree} exited or was not ready within "
                    f"{READY_TIMEOUT_SECONDS:.0f} s. Its log:\n{server.log_path.read_text()}"
                )
            time.sleep(0.3)
        yield server


def print_results(webhooks: list[cpuprobe.ProbedServer], start: float, end: float) -> None:
    cpuprobe.print_cpu_table(webhooks, CASES, "call")
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
    parser = cpuprobe.tree_parser(__doc__.split("\n\n")[0], "webhook")
    parser.add_argument("--calls", type=int, default=500, help="admission calls per batch")
    parser.add_argument("--rounds", type=int, default=5, help="batches per case and tree")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [Path(".")])]

    with cpuprobe.local_plane("temper-bench-wh-") as (stack, workdir, plane):
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
            cpuprobe.measure_requests(name, "/mutate", [body] * 20, webhooks)
        for hook in webhooks:
            hook.cpu_us_per_case.clear()
        start = time.monotonic()
        for round_number in range(args.rounds):
            for name, body in bodies.items():
                cpuprobe.measure_requests(name, "/mutate", [body] * args.calls, webhooks)
            cpuprobe.log(f"round {round_number + 1} of {args.rounds} done")
        end = time.monotonic()
        cpuprobe.force_collections(webhooks)
        stack.close()  # stops the webhooks, which write their GC records, and the plane
        print(f"load average after: {cpuprobe.load_average()}\n")
        print_results(webhooks, start, end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
