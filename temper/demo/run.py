"""Orchestration of ``temper demo``: control plane, components, nodes, workloads, report.

The demo runs two groups of identical Node objects. Pods of the ``baseline`` group are placed
by the default kube-scheduler alone; pods of the ``temper`` group by a second kube-scheduler
(``temper-scheduler``) that calls the Temper extender. The same workloads go to both groups
in the same order, so the report can show where the extender changed a placement. Both
namespaces are opted in to the overcommit webhook, and every Node is served by its own agent.
The components run as subprocesses (``python -m temper.cli ...``), as they would in a cluster.
"""

import json
import logging
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from temper import annotations
from temper.controlplane import LocalControlPlane, SchedulerExtender, node_manifest
from temper.controlplane.client import AdminClient
from temper.controlplane.process import free_port
from temper.demo.workloads import WORKLOADS, Workload
from temper.errors import ControlPlaneError, KubernetesError, TemperError
from temper.tiers import pod_tier, priority_class_manifests

log = logging.getLogger(__name__)

GROUP_LABEL = "temper.codes/demo-group"
GROUPS = ("baseline", "temper")
TEMPER_SCHEDULER = "temper-scheduler"
T = TypeVar("T")


class DemoError(TemperError):
    """A step of the demo failed; the message names the step and where its logs are."""


def wait_until(what: str, check: Callable[[], T | None], timeout_seconds: float = 60.0) -> T:
    """Poll ``check`` every 200 ms until it returns a truthy value."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Component:
    """A component subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class DemoResult:
    """Data shown in the report."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    placement_changes: int = 0
    # Directory that keeps the run's certificates, layer configs and logs after it ends.
    workdir: Path | None = None


class Demo:
    """One run of the demo in ``workdir``."""

    def __init__(self, workdir: Path, nodes_per_group: int, node_cpus: int) -> None:
        self.workdir = workdir
        self.nodes_per_group = nodes_per_group
        self.node_cpus = node_cpus
        self.components: list[Component] = []
        self.plane = LocalControlPlane(workdir / "controlplane")
        self.extender_port = 0
        self._api: AdminClient | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start_component(self, name: str, *args: str) -> Component:
        """Run ``temper <args>`` in the background with its log in the workdir."""
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "temper.cli", *args]
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        component = Component(name, process, log_path)
        self.components.append(component)
        return component

    def wait_ready(self, component: Component, url: str, context: ssl.SSLContext | None) -> None:
        """Wait for ``url`` to return HTTP 200; fail early if the process exits."""

        def ready() -> bool:
            if component.process.poll() is not None:
                tail = component.log_path.read_text(errors="replace")[-2000:]
                raise DemoError(f"{component.name} exited early; its log:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(f"{component.name} at {url}", ready)

    def stop(self) -> None:
        """Stop every component, newest first, then the control plane."""
        for component in reversed(self.components):
            component.stop()
        self.plane.stop()

    @property
    def api(self) -> AdminClient:
        """Admin client of the running control plane."""
        if self._api is None:
            raise DemoError("the control plane is not running")
        return self._api

    # -- steps --------------------------------------------------------------------------

    def start_platform(self) -> None:
        """Control plane, webhook, extender and the second scheduler."""
        print("starting etcd, kube-apiserver and kube-scheduler ...", flush=True)
        self.plane.start()
        kubeconfig = str(self.plane.kubeconfig)
        self._api = self.plane.admin_client()

        webhook_port = free_port()
        webhook = self.start_component(
            "webhook",
            "webhook",
            "--kubeconfig", kubeconfig,
            "--port", str(webhook_port),
            "--register-webhook-url", f"https://127.0.0.1:{webhook_port}/mutate",
        )  # fmt: skip
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # only to poll readiness; the API server verifies
        self.wait_ready(webhook, f"https://127.0.0.1:{webhook_port}/readyz", insecure)

        self.extender_port = free_port()
        extender = self.start_component(
            "extender",
            "extender",
            "--kubeconfig", kubeconfig,
            "--port", str(self.extender_port),
            "--publish-interval-seconds", "2",
        )  # fmt: skip
        self.wait_ready(extender, f"http://127.0.0.1:{self.extender_port}/readyz", None)
        print("starting temper-scheduler (kube-scheduler with the Temper extender) ...")
        self.plane.start_scheduler(
            [SchedulerExtender(url_prefix=f"http://127.0.0.1:{self.extender_port}", weight=5)],
            scheduler_name=TEMPER_SCHEDULER,
        )

    def create_cluster_objects(self) -> None:
        """PriorityClasses, opted-in namespaces, Nodes and one agent per Node."""
        api = self.api
        for manifest in priority_class_manifests():
            api.create("/apis/scheduling.k8s.io/v1/priorityclasses", manifest)
        for group in GROUPS:
            api.create(
                "/api/v1/namespaces",
                {
                    "metadata": {
                        "name": f"demo-{group}",
                        "labels": {annotations.OVERCOMMIT_LABEL: annotations.OVERCOMMIT_ENABLED},
                    }
                },
            )
        self.wait_for_webhook()
        for group in GROUPS:
            for index in range(1, self.nodes_per_group + 1):
                name = f"{group}-{index}"
                api.create(
                    "/api/v1/nodes",
                    node_manifest(name, cpu=str(self.node_cpus), labels={GROUP_LABEL: group}),
                )
                self.start_component(
                    f"agent-{name}",
                    "agent",
                    "--node-name", name,
                    "--kubeconfig", str(self.plane.kubeconfig),
                    "--config-path", str(self.workdir / "layers" / f"{name}.json"),
                    "--state-dir", str(self.workdir / "state" / name),
                    "--port", "0",
                    "--debounce-seconds", "0.2",
                    "--publish-interval-seconds", "1",
                    # The demo's Nodes are API objects: there are no pod threads to observe.
                    "--no-observe-enabled",
                )  # fmt: skip
        print(f"started {len(GROUPS) * self.nodes_per_group} agents, one per Node ...")
        for group in GROUPS:
            for index in range(1, self.nodes_per_group + 1):
                name = f"{group}-{index}"
                wait_until(
                    f"the agent of {name} to publish tier-load",
                    lambda name=name: (  # type: ignore[misc]
                        annotations.TIER_LOAD in _annotations(self.api.get(f"/api/v1/nodes/{name}"))
                    ),
                )

    def wait_for_webhook(self) -> None:
        """Wait until the API server calls the new webhook (it takes about a second)."""
        probe = self.pod_manifest(Workload("webhook-probe", None, "1"), "baseline")

        def mutated() -> bool:
            pod = self.api.create("/api/v1/namespaces/demo-baseline/pods", probe, dry_run=True)
            return annotations.ORIGINAL_REQUESTS in _annotations(pod)

        wait_until("the overcommit webhook to mutate pods", mutated)

    def pod_manifest(self, workload: Workload, group: str) -> dict[str, Any]:
        """Build the pod of ``workload`` for one node group."""
        resources: dict[str, dict[str, str]] = {
            "requests": {"cpu": workload.cpu_request, "memory": workload.memory}
        }
        if workload.cpu_limit is not None:
            resources["limits"] = {"cpu": workload.cpu_limit, "memory": workload.memory}
        spec: dict[str, Any] = {
            "containers": [
                {"name": "main", "image": "registry.invalid/demo:1", "resources": resources}
            ],
            "nodeSelector": {GROUP_LABEL: group},
        }
        if workload.tier is not None:
            spec["priorityClassName"] = workload.tier.priority_class
        if group == "temper":
            spec["schedulerName"] = TEMPER_SCHEDULER
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": workload.name},
            "spec": spec,
        }

    def schedule_workloads(self) -> None:
        """Create each workload in both groups and wait for both bindings."""
        api = self.api
        for workload in WORKLOADS:
            for group in GROUPS:
                api.create(
                    f"/api/v1/namespaces/demo-{group}/pods", self.pod_manifest(workload, group)
                )
            for group in GROUPS:
                path = f"/api/v1/namespaces/demo-{group}/pods/{workload.name}"
                wait_until(
                    f"pod demo-{group}/{workload.name} to be scheduled",
                    lambda path=path: api.get(path)["spec"].get("nodeName"),  # type: ignore[misc]
                )
            # Let the agents publish the new load before the next pod is scored.
            time.sleep(1.5)
        print(f"scheduled {len(WORKLOADS)} workloads in each group")

    # -- results ------------------------------------------------------------------------

    def collect(self) -> DemoResult:
        """Read pods, nodes, layer configs and extender scores back from the cluster."""
        api = self.api
        result = DemoResult()
        placements: dict[str, dict[str, str]] = {group: {} for group in GROUPS}
        for group in GROUPS:
            for pod in api.get(f"/api/v1/namespaces/demo-{group}/pods")["items"]:
                name = pod["metadata"]["name"]
                original = _annotations(pod).get(annotations.ORIGINAL_REQUESTS)
                admitted = _cpu_request(pod)
                before = (
                    annotations.OriginalRequests.decode(original).containers.get("main")
                    if original
                    else admitted
                )
                node = pod["spec"].get("nodeName") or "(pending)"
                placements[group][name] = node.rsplit("-", 1)[-1]
                result.pods.append(
                    {
                        "group": group,
                        "pod": name,
                        "tier": pod_tier(pod).value,
                        "node": node,
                        "cpu_request_original": before,
                        "cpu_request_admitted": admitted,
                        "annotation": original or "-",
                    }
                )
        result.placement_changes = sum(
            1
            for name, index in placements["temper"].items()
            if placements["baseline"].get(name) != index
        )
        for node in api.get("/api/v1/nodes")["items"]:
            name = node["metadata"]["name"]
            raw_load = _annotations(node).get(annotations.TIER_LOAD)
            config_path = self.workdir / "layers" / f"{name}.json"
            result.nodes.append(
                {
                    "node": name,
                    "scheduler": _annotations(node).get(annotations.SCHEDULER, "-"),
                    "tier_load": annotations.TierLoad.decode(raw_load) if raw_load else None,
                    "layers": json.loads(config_path.read_text()) if config_path.exists() else [],
                }
            )
        result.scores = self.extender_scores()
        return result

    def extender_scores(self) -> list[dict[str, Any]]:
        """Ask the extender to prioritize the temper nodes for a new pod of each tier."""
        names = [f"temper-{i}" for i in range(1, self.nodes_per_group + 1)]
        scores = []
        for workload in (WORKLOADS[0], WORKLOADS[2], WORKLOADS[4], WORKLOADS[6], WORKLOADS[8]):
            probe = self.pod_manifest(workload, "temper")
            probe["metadata"]["name"] = f"{workload.name}-next"
            admitted = self.api.create("/api/v1/namespaces/demo-temper/pods", probe, dry_run=True)
            body = json.dumps({"Pod": admitted, "NodeNames": names}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.extender_port}/prioritize",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                ranking = json.loads(response.read())
            scores.append(
                {
                    "pod": probe["metadata"]["name"],
                    "tier": pod_tier(probe).value,
                    "request": _cpu_request(admitted),
                    "scores": {entry["Host"]: entry["Score"] for entry in ranking},
                }
            )
        return scores


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _cpu_request(pod: dict[str, Any]) -> str:
    resources = pod["spec"]["containers"][0].get("resources") or {}
    return str((resources.get("requests") or {}).get("cpu", "-"))


def run_demo(workdir: Path | None, nodes_per_group: int, node_cpus: int) -> DemoResult:
    """Run the whole demo and stop everything it started, also on failure."""
    directory = workdir or Path(tempfile.mkdtemp(prefix="temper-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        demo = Demo(directory, nodes_per_group, node_cpus)
    except ControlPlaneError as error:
        raise DemoError(f"{error}; run scripts/setup.sh first") from error
    try:
        demo.start_platform()
        demo.create_cluster_objects()
        demo.schedule_workloads()
        result = demo.collect()
        result.workdir = directory
        return result
    except (ControlPlaneError, KubernetesError) as error:
        raise DemoError(
            f"{error}; logs are in {directory}/logs and {directory}/controlplane"
        ) from error
    finally:
        print("stopping agents, extender, webhook and the control plane ...", flush=True)
        demo.stop()
