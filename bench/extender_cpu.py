"""CPU time per extender request, and garbage-collection pauses, for one or more source trees.

Starts a dedicated local control plane (etcd, kube-apiserver; kube-scheduler stopped) and
creates ``--nodes`` Nodes, each with a fresh ``temper.codes/tier-load`` value, and
``--bound-pods`` pods bound to them. Then it starts one ``temper extender`` per ``--tree``,
a checkout of this repository such as one made with ``git archive HEAD``. Every extender
lists and watches the same objects.

The script then plays kube-scheduler: it sends every request to each extender in turn, each
extender on one keep-alive HTTP connection, alternating which tree goes first. The
requests carry a pending pod as kube-scheduler sends it (read back from the API server,
``managedFields`` removed) and ``--names`` node names, a window that moves on by its own
length with every request, as kube-scheduler's search start does. The full-object cases
send the Node objects of the window instead of their names. The CPU time of an extender
process is the sum over its threads of the first field of ``/proc/<pid>/task/*/schedstat``
(nanoseconds on a CPU, user and system), read before and after each batch of requests, so
all trees share the same load from other processes. Responses of
the trees to the same request must be byte-identical; the script stops if they are not.

A last phase binds ``--churn-pods`` more pods while it sends ``prioritize`` requests, as
happens while kube-scheduler works, and reports the garbage collections in each extender
during that phase. Then each extender runs five full collections on request, which time
what a full collection costs with that cache. The extenders run under bench/gc_probe.py,
which times every collection with ``gc.callbacks``.

Run from the repository root::

    git archive --prefix=before/ HEAD | tar -x -C /tmp
    .venv/bin/python bench/extender_cpu.py --tree /tmp/before --tree .

It prints Markdown tables: CPU time per request for every case and tree with its ratio to
the first tree, and the pause distribution per tree.
"""

import json
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from math import nan
from pathlib import Path
from typing import Any

import cpuprobe

from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.controlplane import LocalControlPlane, node_manifest
from temper.controlplane.client import AdminClient
from temper.errors import KubernetesError
from temper.tiers import Tier, priority_class_manifests

NODE_CPU_MILLICORES = 8000
# The benchmark writes every annotation once; this interval keeps them fresh for three hours.
PUBLISH_INTERVAL_SECONDS = 3600
NAMESPACE = "bench"
READY_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Case:
    """One kind of request: a verb, the pod's tier and the shape of the node list."""

    name: str
    verb: str
    critical: bool
    full_objects: bool


CASES = (
    Case("filter, normal pod, NodeNames", "filter", critical=False, full_objects=False),
    Case("filter, critical pod, NodeNames", "filter", critical=True, full_objects=False),
    Case("prioritize, normal pod, NodeNames", "prioritize", critical=False, full_objects=False),
    Case("filter, critical pod, Nodes", "filter", critical=True, full_objects=True),
    Case("prioritize, normal pod, Nodes", "prioritize", critical=False, full_objects=True),
)


def run_parallel(work: Callable[[Any], object], items: Iterable[Any], concurrency: int) -> None:
    """Run ``work`` on every item with ``concurrency`` threads; stop on the first error."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(work, items))


def tier_load_value(rng: random.Random) -> str:
    entries = {
        tier: TierLoadEntry(
            protection_capacity_millicores=rng.randrange(0, NODE_CPU_MILLICORES + 1, 100)
        )
        for tier in Tier
    }
    return TierLoad(
        timestamp_seconds=time.time(), node_cpu_millicores=NODE_CPU_MILLICORES, tiers=entries
    ).encode()


def pod_manifest(name: str, node_name: str | None, priority_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "registry.invalid/app:1",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            }
        ],
    }
    if node_name is not None:
        spec["nodeName"] = node_name
    else:
        # No scheduler serves this name, so the pod stays pending like one in kube-scheduler's
        # queue.
        spec["schedulerName"] = "bench-unscheduled"
    if priority_class is not None:
        spec["priorityClassName"] = priority_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def without_managed_fields(document: dict[str, Any]) -> dict[str, Any]:
    """Drop metadata.managedFields, as kube-scheduler's informers do."""
    document.get("metadata", {}).pop("managedFields", None)
    return document


def create_objects(admin: AdminClient, node_count: int, bound_pods: int) -> list[str]:
    """Create the Nodes, the bound pods and the PriorityClasses; return the node names."""
    rng = random.Random(node_count)
    names = [f"node-{index:05d}" for index in range(node_count)]
    values = {name: tier_load_value(rng) for name in names}
    for manifest in priority_class_manifests():
        admin.create("/apis/scheduling.k8s.io/v1/priorityclasses", manifest)
    admin.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})

    started = time.monotonic()
    run_parallel(
        lambda name: admin.create(
            "/api/v1/nodes",
            node_manifest(name, cpu="8", annotations={TIER_LOAD: values[name]}),
        ),
        names,
        concurrency=20,
    )
    cpuprobe.log(f"created {node_count} nodes in {time.monotonic() - started:.1f} s")
    bind_pods(admin, "bound", bound_pods, names)
    return names


def bind_pods(admin: AdminClient, prefix: str, count: int, node_names: list[str]) -> None:
    """Create ``count`` pods already bound to nodes (spec.nodeName), round-robin."""
    started = time.monotonic()
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    run_parallel(
        lambda index: admin.create(
            path,
            pod_manifest(f"{prefix}-{index:05d}", node_names[index % len(node_names)], None),
        ),
        range(count),
        # Twenty threads made kube-apiserver time out requests on a loaded 2-CPU machine.
        concurrency=8,
    )
    cpuprobe.log(f"created {count} bound pods ({prefix}) in {time.monotonic() - started:.1f} s")


def pending_pod(admin: AdminClient, name: str, priority_class: str | None) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    admin.create(path, pod_manifest(name, None, priority_class))
    return without_managed_fields(admin.get(f"{path}/{name}"))


def nodes_with_tier_load(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("temper_extender_nodes_with_tier_load "):
            return float(line.split()[1])
    return 0.0


def extender(
    plane: LocalControlPlane, tree: Path, workdir: Path, index: int, profile_dir: Path | None
) -> AbstractContextManager[cpuprobe.ProbedServer]:
    """Run ``temper extender`` from ``tree`` against the plane until the context ends."""
    extra_env = {}
    if profile_dir is not None:
        extra_env["TEMPER_BENCH_PROFILE_FILE"] = str(profile_dir / f"extender-{index}.prof")
    options = ["--publish-interval-seconds", str(PUBLISH_INTERVAL_SECONDS)]
    return cpuprobe.probed_server(
        "extender", plane, tree, workdir, index, options=options, extra_env=extra_env
    )


def wait_for_cache(extenders: list[cpuprobe.ProbedServer], node_count: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    for ext in extenders:
        while nodes_with_tier_load(ext.port) < node_count:
            if ext.process.poll() is not None:
                raise SystemExit(f"extender from {ext.tree} exited:\n{ext.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"extender from {ext.tree} did not cache {node_count} nodes")
            time.sleep(0.5)


class Requests:
    """Request bodies of every case, one per window of node names."""

    def __init__(
        self,
        names: list[str],
        nodes: dict[str, dict[str, Any]],
        pods: dict[bool, dict[str, Any]],
        window: int,
    ) -> None:
        self._names = names
        self._nodes = nodes
        self._pods = pods
        self._window = window
        self._start = 0

    def next_window(self) -> list[str]:
        names = [self._names[(self._start + i) % len(self._names)] for i in range(self._window)]
        self._start = (self._start + self._window) % len(self._names)
        return names

    def body(self, case: Case, window: list[str]) -> bytes:
        document: dict[str, Any] = {"Pod": self._pods[case.critical], "Nodes": None}
        if case.full_objects:
            document["Nodes"] = {"metadata": {}, "items": [self._nodes[n] for n in window]}
            document["NodeNames"] = None
        else:
            document["NodeNames"] = window
        return json.dumps(document, separators=(",", ":")).encode()


def measure_case(
    case: Case, extenders: list[cpuprobe.ProbedServer], requests: Requests, count: int
) -> None:
    """Send ``count`` requests of one case to every extender and record the CPU time per request."""
    bodies = [requests.body(case, requests.next_window()) for _ in range(count)]
    cpuprobe.measure_requests(case.name, f"/{case.verb}", bodies, extenders)


def churn(
    admin: AdminClient,
    extenders: list[cpuprobe.ProbedServer],
    requests: Requests,
    node_names: list[str],
    pods: int,
) -> tuple[float, float, int]:
    """Bind ``pods`` pods while sending prioritize requests; return the phase and request count."""
    case = CASES[2]
    done = threading.Event()
    started = time.monotonic()

    def bind_then_signal() -> None:
        bind_pods(admin, "churn", pods, node_names)
        done.set()

    binder = threading.Thread(target=bind_then_signal, daemon=True)
    binder.start()
    sent = 0
    while not done.is_set():
        body = requests.body(case, requests.next_window())
        for ext in extenders:
            ext.post(f"/{case.verb}", body)
        sent += 1
    binder.join()
    return started, time.monotonic(), sent


@dataclass
class PauseSummary:
    """Garbage collections of one extender: counts per generation and pause times in ms."""

    counts: dict[int, int]
    wall_ms: list[float]
    cpu_ms: list[float]
    forced_wall_ms: list[float]
    forced_cpu_ms: list[float]


def pause_summary(path: Path, start: float, end: float) -> PauseSummary:
    """Summarise the automatic collections that began in [start, end] and the forced ones."""
    records = json.loads(path.read_text())
    counts = {0: 0, 1: 0, 2: 0}
    wall_ms, cpu_ms = [], []
    for begin, wall_seconds, cpu_seconds, generation in records["automatic"]:
        if start <= begin <= end:
            counts[generation] += 1
            wall_ms.append(wall_seconds * 1000)
            cpu_ms.append(cpu_seconds * 1000)
    forced = records["forced"]
    return PauseSummary(
        counts=counts,
        wall_ms=sorted(wall_ms),
        cpu_ms=sorted(cpu_ms),
        forced_wall_ms=sorted(wall * 1000 for _begin, wall, _cpu, _gen in forced),
        forced_cpu_ms=sorted(cpu * 1000 for _begin, _wall, cpu, _gen in forced),
    )


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = cpuprobe.tree_parser(__doc__.split("\n\n")[0], "extender")
    parser.add_argument("--nodes", type=int, default=5000, help="Nodes to create")
    parser.add_argument("--bound-pods", type=int, default=5000, help="pods bound before measuring")
    parser.add_argument("--names", type=int, default=500, help="node names per request")
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per batch (NodeNames cases)"
    )
    parser.add_argument(
        "--full-object-requests", type=int, default=40, help="requests per batch (Nodes cases)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="batches per case and tree")
    parser.add_argument(
        "--churn-pods", type=int, default=2000, help="pods bound during the GC phase"
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="run each extender under cProfile (CPU time) and write extender-<i>.prof here",
    )
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [Path(".")])]

    with cpuprobe.local_plane("temper-bench-cpu-") as (stack, workdir, plane):
        admin = plane.admin_client()
        try:
            names = create_objects(admin, args.nodes, args.bound_pods)
        except KubernetesError as error:
            raise SystemExit(f"creating the objects failed: {error}") from error
        listing = admin.get("/api/v1/nodes")
        nodes = {
            item["metadata"]["name"]: without_managed_fields(item) for item in listing["items"]
        }
        pods = {
            False: pending_pod(admin, "pending-normal", None),
            True: pending_pod(admin, "pending-critical", Tier.CRITICAL.priority_class),
        }
        requests = Requests(names, nodes, pods, args.names)

        extenders = [
            stack.enter_context(extender(plane, tree, workdir, index, args.profile_dir))
            for index, tree in enumerate(trees)
        ]
        wait_for_cache(extenders, args.nodes)
        cached_memory = {ext.tree: ext.resident_mib() for ext in extenders}
        cpuprobe.log("every extender cached the nodes; measuring")
        for round_number in range(args.rounds):
            for case in CASES:
                count = args.full_object_requests if case.full_objects else args.requests
                measure_case(case, extenders, requests, count)
            cpuprobe.log(f"round {round_number + 1} of {args.rounds} done")
        memory = {ext.tree: ext.resident_mib() for ext in extenders}

        cpuprobe.log(f"binding {args.churn_pods} pods while sending prioritize requests")
        start, end, sent = churn(admin, extenders, requests, names, args.churn_pods)
        cpuprobe.force_collections(extenders)
        stack.close()  # stops the extenders, which write their GC records, and the plane

        print(f"load average after: {cpuprobe.load_average()}\n")
        cpuprobe.print_cpu_table(extenders, [case.name for case in CASES], "request")
        print()
        for tree, mib in memory.items():
            print(
                f"{tree}: VmRSS {cached_memory[tree]:.0f} MiB with the cache loaded, "
                f"{mib:.0f} MiB after the CPU phase"
            )
        print(
            f"\nGC phase: {args.churn_pods} pods bound in {end - start:.1f} s while "
            f"{sent} prioritize requests went to each extender\n"
        )
        print(
            "| Tree | Gen 0 | Gen 1 | Gen 2 | CPU p50 ms | CPU max ms | CPU total ms | "
            "Wall max ms | Full collection CPU ms (median of forced) |"
        )
        print("|---" * 9 + "|")
        for ext in extenders:
            pauses = pause_summary(ext.gc_path, start, end)
            forced = statistics.median(pauses.forced_cpu_ms) if pauses.forced_cpu_ms else nan
            print(
                f"| {ext.tree} | {pauses.counts[0]} | {pauses.counts[1]} | {pauses.counts[2]} | "
                f"{percentile(pauses.cpu_ms, 0.5):.2f} | {max(pauses.cpu_ms, default=nan):.2f} | "
                f"{sum(pauses.cpu_ms):.1f} | {max(pauses.wall_ms, default=nan):.2f} | "
                f"{forced:.2f} |"
            )
        print()
        for ext in extenders:
            pauses = pause_summary(ext.gc_path, start, end)
            cpu = ", ".join(f"{value:.2f}" for value in pauses.forced_cpu_ms)
            wall = ", ".join(f"{value:.2f}" for value in pauses.forced_wall_ms)
            print(f"{ext.tree}: forced full collections, CPU ms {cpu}; wall ms {wall}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
