"""kube-scheduler throughput with and without the Temper extender at 1,000 and 5,000 nodes.

Starts a dedicated local control plane (etcd, kube-apiserver, kube-scheduler) in a temporary
directory and ``temper extender`` as a subprocess. For each node count it creates the
missing Node objects, each with a fresh ``temper.codes/tier-load`` annotation, and then runs
three arms, ``--rounds`` times:

- kube-scheduler alone;
- kube-scheduler with ``bench/noopextender``, a Go extender that passes every node and scores
  none. It measures what the extender protocol alone costs kube-scheduler;
- kube-scheduler with Temper's extender.

Both extenders are configured alike (node-cache-capable, ignorable, weight 5).

Each arm stops kube-scheduler, creates its pods in a fresh namespace, starts kube-scheduler
again and waits until a watch on the namespace has seen every pod bound. Throughput is
``(pods - 1) / (last bind - first bind)``: with the pods created before kube-scheduler
starts, it measures scheduling, not how fast this script can create pods (52 to 125 pods/s
on a loaded 2-CPU machine, the same range as kube-scheduler's rate). The extender's handler
latency comes from its own ``/metrics`` histogram (the difference between the scrapes before
and after the arm), its resident memory from ``/proc/<pid>/status``.

Run from the repository root::

    .venv/bin/python bench/extender_scale.py

It prints a Markdown table and stops by itself: every wait has a deadline, and no arm starts
once ``--budget-seconds`` have passed.
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gofloors
from prometheus_client.parser import text_string_to_metric_families

from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.controlplane import LocalControlPlane, SchedulerExtender, node_manifest
from temper.controlplane.client import AdminClient
from temper.controlplane.process import ManagedProcess, free_port
from temper.errors import KubernetesError
from temper.tiers import Tier

NODE_CPU_MILLICORES = 8000
POD_CPU_REQUEST = "100m"
HISTOGRAM = "temper_extender_request_duration_seconds"
NODES_GAUGE = "temper_extender_nodes_with_tier_load"
# The benchmark writes every annotation once; this interval keeps them fresh for three hours.
PUBLISH_INTERVAL_SECONDS = 3600
ARMS = ("scheduler-alone", "noop-extender", "with-extender")


@dataclass
class ArmResult:
    """Measurements of one arm."""

    arm: str
    node_count: int
    round_number: int
    pods: int
    # From the start of kube-scheduler to the first bind the watch saw.
    startup_seconds: float
    # From the first bind to the last bind the watch saw.
    bind_window_seconds: float
    handler_latency: dict[str, "LatencySummary"]
    # os.getloadavg() when kube-scheduler was started, formatted.
    load_average: str
    # CPU time used while the pods were scheduled, divided by the number of pods. The
    # scheduler's count starts once it reports ready, so its start-up is left out.
    extender_cpu_ms_per_pod: float
    scheduler_cpu_ms_per_pod: float

    @property
    def pods_per_second(self) -> float:
        return (self.pods - 1) / self.bind_window_seconds


@dataclass
class LatencySummary:
    """Handler latency of one verb during one arm, from histogram bucket counts."""

    calls: int
    p50_seconds: float
    p99_seconds: float


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tier_load_value(rng: random.Random) -> str:
    """Return a fresh tier-load value with random protection capacity per tier."""
    entries = {
        tier: TierLoadEntry(
            protection_capacity_millicores=rng.randrange(0, NODE_CPU_MILLICORES + 1, 100)
        )
        for tier in Tier
    }
    return TierLoad(
        timestamp_seconds=time.time(), node_cpu_millicores=NODE_CPU_MILLICORES, tiers=entries
    ).encode()


def run_parallel(
    work: Callable[[Any], object], items: Iterable[Any], concurrency: int
) -> list[BaseException]:
    """Run ``work`` on every item with ``concurrency`` threads; return the errors raised."""
    errors: list[BaseException] = []

    def guarded(item: Any) -> None:
        try:
            work(item)
        except (KubernetesError, OSError) as error:
            errors.append(error)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(guarded, items))
    return errors


def create_nodes(admin: AdminClient, names: list[str], concurrency: int, seed: int) -> None:
    rng = random.Random(seed)
    values = {name: tier_load_value(rng) for name in names}

    def create(name: str) -> None:
        manifest = node_manifest(
            name, cpu=str(NODE_CPU_MILLICORES // 1000), annotations={TIER_LOAD: values[name]}
        )
        admin.create("/api/v1/nodes", manifest)

    started = time.monotonic()
    errors = run_parallel(create, names, concurrency)
    if errors:
        raise SystemExit(f"creating {len(errors)} of {len(names)} nodes failed: {errors[0]}")
    log(f"created {len(names)} nodes in {time.monotonic() - started:.1f} s")


def pod_manifest(name: str) -> dict[str, Any]:
    resources = {"requests": {"cpu": POD_CPU_REQUEST, "memory": "64Mi"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.invalid/app:1", "resources": resources}
            ],
        },
    }


class BindWatcher:
    """Watches the pods of one namespace and records when each one is first seen bound.

    kube-apiserver ends a watch whose reader falls behind, which happened in trials while
    the bench's own threads were busy creating objects, so a watch that ends is reopened
    from the last resourceVersion seen.
    """

    def __init__(self, plane: LocalControlPlane, namespace: str, resource_version: str) -> None:
        self._context = ssl.create_default_context(cafile=str(plane.ca_path))
        self._context.load_cert_chain(
            str(plane.pki_dir / "admin.crt"), str(plane.pki_dir / "admin.key")
        )
        self._port = plane.apiserver_port
        self._namespace = namespace
        self._resource_version = resource_version
        self._connection: http.client.HTTPSConnection | None = None
        self._closing = False
        self.reconnects = 0
        self.bound_at: dict[str, float] = {}
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._open()
        self._thread = threading.Thread(target=self._read, name="bind-watcher", daemon=True)
        self._thread.start()

    def _open(self) -> http.client.HTTPResponse:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=self._context, timeout=60
        )
        path = (
            f"/api/v1/namespaces/{self._namespace}/pods?watch=true"
            f"&resourceVersion={self._resource_version}&timeoutSeconds=900"
        )
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            detail = response.read()[:300]
            raise http.client.HTTPException(f"watch on {self._namespace} failed: {detail!r}")
        self._connection = connection
        self._response = response
        return response

    def _read(self) -> None:
        try:
            response = self._response
            while True:
                self._read_stream(response)
                if self._closing:
                    return
                self.reconnects += 1
                response = self._open()
        except (OSError, ValueError, http.client.HTTPException) as error:
            if not self._closing:
                self.error = error
        finally:
            with self._changed:
                self._changed.notify_all()

    def _read_stream(self, response: http.client.HTTPResponse) -> None:
        pending = b""
        while True:
            data = response.read1(65536)
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.strip():
                    self._record(json.loads(line))

    def _record(self, event: Mapping[str, Any]) -> None:
        pod = event.get("object") or {}
        metadata = pod.get("metadata") or {}
        if event.get("type") == "ERROR":
            raise http.client.HTTPException(f"watch on {self._namespace}: {pod}")
        self._resource_version = str(metadata.get("resourceVersion", self._resource_version))
        name = str(metadata.get("name"))
        if (pod.get("spec") or {}).get("nodeName") and name not in self.bound_at:
            with self._changed:
                self.bound_at[name] = time.monotonic()
                self._changed.notify_all()

    def wait_for(self, count: int, deadline: float) -> bool:
        """Wait until ``count`` pods are bound; False when the deadline passes first."""
        with self._changed:
            while len(self.bound_at) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error is not None or not self._thread.is_alive():
                    return False
                self._changed.wait(min(remaining, 1.0))
        return True

    def close(self) -> None:
        self._closing = True
        connection = self._connection
        if connection is not None and connection.sock is not None:
            # Shut the socket down first: closing the response would wait for the reading
            # thread's blocked read to time out.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        if connection is not None:
            connection.close()


def scrape_histogram(url: str) -> dict[str, dict[float, float]]:
    """Return the cumulative bucket counts of the handler histogram per verb."""
    with urllib.request.urlopen(url + "metrics", timeout=10) as reply:
        text = reply.read().decode()
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.name == HISTOGRAM + "_bucket":
                verb = sample.labels["verb"]
                buckets.setdefault(verb, {})[float(sample.labels["le"])] = sample.value
    return buckets


def scrape_gauge(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "metrics", timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(family.samples[0].value)
    return float("nan")


def extender_has_nodes(url: str, count: int) -> bool:
    return scrape_gauge(url, NODES_GAUGE) >= count


def histogram_quantile(quantile: float, cumulative: Mapping[float, float]) -> float:
    """Estimate a quantile from cumulative bucket counts, interpolating inside the bucket.

    This is the estimate Prometheus' ``histogram_quantile`` makes; its error is at most the
    width of the bucket the quantile falls in.
    """
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]]
    if total == 0:
        return float("nan")
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_between(
    before: Mapping[str, Mapping[float, float]], after: Mapping[str, Mapping[float, float]]
) -> dict[str, LatencySummary]:
    """Summarise the calls made between two scrapes, per verb and for both verbs together."""
    deltas: dict[str, dict[float, float]] = {}
    for verb, buckets in after.items():
        earlier = before.get(verb, {})
        deltas[verb] = {le: count - earlier.get(le, 0.0) for le, count in buckets.items()}
    if deltas:
        bounds = next(iter(deltas.values())).keys()
        deltas["both"] = {le: sum(d.get(le, 0.0) for d in deltas.values()) for le in bounds}
    return {
        verb: LatencySummary(
            calls=int(buckets[float("inf")]),
            p50_seconds=histogram_quantile(0.5, buckets),
            p99_seconds=histogram_quantile(0.99, buckets),
        )
        for verb, buckets in deltas.items()
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far, in seconds."""
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def wait_until(check: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(0.5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def extender_process(
    plane: LocalControlPlane, workdir: Path, profile_path: Path | None
) -> Iterator[tuple[str, int]]:
    """Run ``temper extender`` against the plane; yield its base URL and process id."""
    port = free_port()
    command = [sys.executable]
    if profile_path is not None:
        # cProfile writes the file when the extender exits after SIGTERM.
        command += ["-m", "cProfile", "-o", str(profile_path)]
    command += [
        "-m",
        "temper.cli",
        "extender",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--port",
        str(port),
        "--publish-interval-seconds",
        str(PUBLISH_INTERVAL_SECONDS),
    ]
    process = ManagedProcess("temper-extender", command, workdir / "extender.log")
    with serving(process, port) as url:
        yield url, process.pid


@contextmanager
def noop_extender_process(workdir: Path) -> Iterator[tuple[str, int]]:
    """Build and run ``bench/noopextender`` (Go), and yield its base URL and process id."""
    binary = gofloors.build("noopextender", workdir)
    port = free_port()
    command = [str(binary), "--address", f"127.0.0.1:{port}"]
    process = ManagedProcess("noopextender", command, workdir / "noopextender.log")
    with serving(process, port) as url:
        yield url, process.pid


@contextmanager
def serving(process: ManagedProcess, port: int) -> Iterator[str]:
    """Wait until the extender on ``port`` is ready, yield its base URL, then stop it."""
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: http_ok(url + "readyz"), 60, f"/readyz of {process.name}")
        yield url
    finally:
        process.stop(timeout_seconds=30)


@dataclass
class Bench:
    """The control plane, the extender and the options shared by every arm."""

    plane: LocalControlPlane
    admin: AdminClient
    extender_url: str
    extender_pid: int
    noop_url: str
    noop_pid: int
    pods: int
    concurrency: int

    def run_arm(
        self, arm: str, node_count: int, round_number: int, deadline: float
    ) -> ArmResult | None:
        """Schedule the pods in a fresh namespace; None when not all are bound by the deadline."""
        admin = self.admin
        namespace = f"bench-{arm}-{node_count}-{round_number}"
        path = f"/api/v1/namespaces/{namespace}/pods"
        self.plane.stop_scheduler()
        admin.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        listing = admin.get(path)
        watcher = BindWatcher(self.plane, namespace, listing["metadata"]["resourceVersion"])
        try:
            names = [f"pod-{index:05d}" for index in range(self.pods)]
            started = time.monotonic()
            errors = run_parallel(
                lambda name: admin.create(path, pod_manifest(name)), names, self.concurrency
            )
            if errors:
                raise SystemExit(f"creating {len(errors)} of {self.pods} pods failed: {errors[0]}")
            log(f"created {self.pods} pods in {time.monotonic() - started:.1f} s")

            extenders = []
            # The process whose CPU time is reported as the extender's. In the scheduler-alone
            # arm that is Temper's extender, which then only watches the binds.
            extender_pid = self.extender_pid
            if arm == "with-extender":
                extenders = [SchedulerExtender(url_prefix=self.extender_url.rstrip("/"), weight=5)]
            elif arm == "noop-extender":
                extenders = [SchedulerExtender(url_prefix=self.noop_url.rstrip("/"), weight=5)]
                extender_pid = self.noop_pid
            before = scrape_histogram(self.extender_url)
            extender_cpu = cpu_seconds(extender_pid)
            load = load_average()
            log(f"{arm}, {node_count} nodes, round {round_number}: load average {load}")
            scheduler_started = time.monotonic()
            self.plane.start_scheduler(extenders)
            scheduler_pid = next(p.pid for p in self.plane.processes if p.name == "kube-scheduler")
            scheduler_cpu = cpu_seconds(scheduler_pid)
            finished = watcher.wait_for(self.pods, deadline)
            after = scrape_histogram(self.extender_url)
            extender_cpu = cpu_seconds(extender_pid) - extender_cpu
            scheduler_cpu = cpu_seconds(scheduler_pid) - scheduler_cpu
        finally:
            watcher.close()
        delete_pods(admin, namespace)
        if not finished:
            log(
                f"{arm} at {node_count} nodes: {len(watcher.bound_at)} of {self.pods} pods "
                f"bound by the deadline (watch error: {watcher.error!r})"
            )
            return None
        first_bind = min(watcher.bound_at.values())
        result = ArmResult(
            arm=arm,
            node_count=node_count,
            round_number=round_number,
            pods=self.pods,
            startup_seconds=first_bind - scheduler_started,
            bind_window_seconds=max(watcher.bound_at.values()) - first_bind,
            handler_latency=latency_between(before, after),
            load_average=load,
            extender_cpu_ms_per_pod=extender_cpu * 1000 / self.pods,
            scheduler_cpu_ms_per_pod=scheduler_cpu * 1000 / self.pods,
        )
        log(
            f"{arm} at {node_count} nodes: {result.pods_per_second:.1f} pods/s "
            f"(first bind {result.startup_seconds:.1f} s after the scheduler start, "
            f"{watcher.reconnects} watch reconnects)"
        )
        return result


def delete_pods(admin: AdminClient, namespace: str) -> None:
    """Delete the namespace's pods with grace period 0 (no kubelet runs) and wait until gone."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    admin.request("DELETE", path, params={"gracePeriodSeconds": "0"}, timeout_seconds=300)
    wait_until(lambda: not admin.get(path)["items"], 120, f"the pods of {namespace} to go")
    admin.request("DELETE", f"/api/v1/namespaces/{namespace}")


def machine_description() -> dict[str, str]:
    memory = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout
    total_gib = next(
        (line.split()[1] for line in memory.splitlines() if line.startswith("Mem:")), "?"
    )
    return {
        "cpus": str(os.cpu_count()),
        "memory_gib": total_gib,
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d"),
    }


def format_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def print_report(results: list[ArmResult], memory: Mapping[str, Mapping[str, float]]) -> None:
    machine = machine_description()
    print()
    print(
        f"Machine: {machine['cpus']} CPUs, {machine['memory_gib']} GiB RAM, kernel "
        f"{machine['kernel']}, {machine['date']}"
    )
    print()
    print(
        "| Nodes | Round | Arm | Load average at start | Pods/s | Ratio to scheduler alone | "
        "Ratio to no-op extender | Handler calls | Handler p50 ms | Handler p99 ms | "
        "kube-scheduler CPU ms/pod | Extender CPU ms/pod |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rates = {
        (result.arm, result.node_count, result.round_number): result.pods_per_second
        for result in results
    }
    for result in results:
        key = (result.node_count, result.round_number)
        ratio = noop_ratio = calls = p50 = p99 = ""
        alone = rates.get(("scheduler-alone", *key))
        noop = rates.get(("noop-extender", *key))
        if result.arm != "scheduler-alone" and alone is not None:
            ratio = f"{result.pods_per_second / alone:.2f}"
        if result.arm == "with-extender" and noop is not None:
            noop_ratio = f"{result.pods_per_second / noop:.2f}"
        both = result.handler_latency.get("both")
        if result.arm == "with-extender" and both is not None:
            calls = str(both.calls)
            p50 = format_ms(both.p50_seconds)
            p99 = format_ms(both.p99_seconds)
        print(
            f"| {result.node_count} | {result.round_number} | {result.arm} | "
            f"{result.load_average} | {result.pods_per_second:.1f} | {ratio} | {noop_ratio} | "
            f"{calls} | "
            f"{p50} | {p99} | {result.scheduler_cpu_ms_per_pod:.2f} | "
            f"{result.extender_cpu_ms_per_pod:.2f} |"
        )
    print()
    for result in results:
        if result.arm != "with-extender":
            continue
        for verb, summary in sorted(result.handler_latency.items()):
            if verb == "both":
                continue
            print(
                f"{result.node_count} nodes, round {result.round_number}, {verb}: "
                f"{summary.calls} calls, p50 {format_ms(summary.p50_seconds)} ms, "
                f"p99 {format_ms(summary.p99_seconds)} ms"
            )
    for moment, values in memory.items():
        print(
            f"extender memory {moment}: VmRSS {values['VmRSS']:.0f} MiB, "
            f"peak VmHWM {values['VmHWM']:.0f} MiB"
        )


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--node-counts", default="1000,5000", help="comma-separated node counts, ascending"
    )
    parser.add_argument("--pods", type=int, default=1000, help="pods scheduled per arm")
    parser.add_argument("--rounds", type=int, default=2, help="runs of the arms per node count")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="parallel create requests (threads)"
    )
    parser.add_argument(
        "--arm-timeout-seconds",
        type=float,
        default=150,
        help="maximum wait for one arm's binds, in seconds",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=600,
        help="no arm starts after this many seconds since the start of the run",
    )
    parser.add_argument(
        "--profile-extender",
        type=Path,
        default=None,
        help="run the extender under cProfile and write its profile to this file",
    )
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"comma-separated arms run in each round, in this order, from {', '.join(ARMS)}",
    )
    args = parser.parse_args()
    arms = [arm for arm in args.arms.split(",") if arm]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r} in --arms; choose from {', '.join(ARMS)}")
    node_counts = sorted(int(count) for count in args.node_counts.split(","))
    run_deadline = time.monotonic() + args.budget_seconds

    results: list[ArmResult] = []
    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="temper-bench-") as tmp:
        workdir = Path(tmp)
        plane = LocalControlPlane(workdir / "controlplane")
        plane.start()
        try:
            admin = plane.admin_client()
            with (
                extender_process(plane, workdir, args.profile_extender) as (url, pid),
                noop_extender_process(workdir) as (noop_url, noop_pid),
            ):
                bench = Bench(
                    plane, admin, url, pid, noop_url, noop_pid, args.pods, args.concurrency
                )
                created = 0
                for node_count in node_counts:
                    names = [f"node-{index:05d}" for index in range(created, node_count)]
                    create_nodes(admin, names, args.concurrency, seed=node_count)
                    created = node_count
                    wait_until(
                        partial(extender_has_nodes, url, node_count),
                        120,
                        f"the extender to cache {node_count} nodes",
                    )
                    memory[f"with {node_count} nodes cached"] = resident_memory_mib(pid)
                    for round_number in range(1, args.rounds + 1):
                        for arm in arms:
                            if time.monotonic() > run_deadline:
                                log(f"budget used up, skipping {arm} at {node_count} nodes")
                                continue
                            deadline = time.monotonic() + args.arm_timeout_seconds
                            result = bench.run_arm(arm, node_count, round_number, deadline)
                            if result is not None:
                                results.append(result)
                memory["after the last arm"] = resident_memory_mib(pid)
        finally:
            plane.stop()
    print_report(results, memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
