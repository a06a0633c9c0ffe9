"""The guest check that runs the real node agent (``temper agent``) in the sched_ext VM.

The agent talks to the host's kube-apiserver (see ``guestkube.py``) and drives stock-kernel
mode and the real scx_layered on the guest's cgroup v2 tree. The check creates pods in the
API server, bound to the VM's Node, and lays out the cgroups the kubelet would create for
them (systemd driver) with real processes inside.

One scenario covers the agent's life, because every agent start imports for a minute or
more under emulation. Its steps: stock-kernel mode while the guest has no kernel config,
scx_layered once the config appears, CPU limits under the agent's layers, adoption by a
second agent, safe mode, a restart for a new config and the stop on SIGTERM. Durations are
recorded to show that each step happened and in which order. Under emulation they say
nothing about latency on hardware.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.vm.guestkube import GuestKube, KubeError, pod_manifest
from tests.vm.guestlib import (
    ATTACH_TIMEOUT_SECONDS,
    CGROUP_ROOT,
    DETACH_TIMEOUT_SECONDS,
    Observed,
    cgroup_cpus_used,
    cpu_weight_for_request,
    enable_cpu_controller,
    kubelet_container_cgroup,
    kubelet_pod_cgroup,
    layer_task_counts,
    layered_attached,
    log_tail,
    mean_runq_delay_us,
    read_text,
    remove_cgroup,
    sched_ext_enable_seq,
    sched_ext_ops,
    sched_ext_state,
    scx_layered_pids,
    start_hogs,
    start_in_cgroup,
    start_latency_loop,
    stop_processes,
    wait_for,
    wait_for_layer_counts,
)

SCHEDULER_ANNOTATION = "temper.codes/scheduler"
SAFE_MODE_ANNOTATION = "temper.codes/safe-mode-requested"
# The agent's start-up (Python imports, then list and watch) takes one to several minutes
# under emulation on a busy machine.
AGENT_READY_TIMEOUT_SECONDS = 360.0
AGENT_STOP_TIMEOUT_SECONDS = 90.0
SAFE_MODE_TIMEOUT_SECONDS = 60.0
# Seconds of quiet after an API change before the agent reconciles. Two seconds let the
# config-change step create both critical pods before the agent restarts the scheduler.
DEBOUNCE_SECONDS = 2.0
CGROUP_FILES = ("cpu.idle", "cpu.weight", "cpu.max")
# Run-queue delay samples of the latency loop, in seconds of wall time.
RUNQ_WINDOW_SECONDS = 5.0
BATCH_HOGS = 4
RUNQ_CPU = 1
# CPU-limit windows: two busy loops can use both of the VM's CPUs.
LIMIT_HOGS = 2
LIMIT_WARMUP_SECONDS = 1.0
LIMIT_WINDOW_SECONDS = 4.0
# A cgroup outside the pods with a CPU quota, as systemd makes for CPUQuota=: the agent's
# layers do not match it, so its tasks run in the catch-all layer.
SERVICE_CGROUP = "system.slice/temper-vm-capped.service"
# The pods of the setup step; the config-change step adds two critical pods.
SETUP_PODS = ["web", "app", "etl", "batch", "capped", "capped-low"]
CPU_PERIOD_US = 100_000


class Agent:
    """One ``temper agent`` process for the VM's Node, its log in the agent directory."""

    def __init__(
        self, plan: dict[str, Any], args: dict[str, Any], name: str, port: int, *extra: str
    ) -> None:
        directory = Path(args["agent_dir"])
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log_path = directory / f"agent-{name}.log"
        self.config_path = directory / "layers.json"
        self.state_file = directory / "state" / "scheduler.json"
        command = [
            sys.executable, "-m", "temper.cli", "agent",
            "--node-name", args["node"],
            "--kubeconfig", args["kubeconfig"],
            "--config-path", str(self.config_path),
            "--state-dir", str(directory / "state"),
            "--scx-layered-path", plan["scx_layered"],
            "--safe-mode-namespace", args["safe_mode_namespace"],
            "--listen-address", "127.0.0.1",
            "--port", str(port),
            "--debounce-seconds", str(DEBOUNCE_SECONDS),
            "--publish-interval-seconds", "2",
            "--min-restart-interval-seconds", "0",
            "--scheduler-attach-timeout-seconds", str(ATTACH_TIMEOUT_SECONDS),
            "--scx-stats-interval-seconds", "2",
            # BCC would compile its programs for minutes under emulation; the observation
            # layer has host tests of its own.
            "--no-bpf-enabled",
            "--no-observe-enabled",
            *extra,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=plan["repo"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _get(self, path: str) -> tuple[int, str] | None:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), ""
        except OSError:
            return None

    def ready(self) -> bool:
        reply = self._get("/readyz")
        return reply is not None and reply[0] == 200

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``name{labels}`` to value (empty when unreachable)."""
        reply = self._get("/metrics")
        samples: dict[str, float] = {}
        if reply is None or reply[0] != 200:
            return samples
        for line in reply[1].splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
        return samples

    def metric(self, name: str) -> float | None:
        return self.metrics().get(name)

    def wait_reconciles(self, count: float, timeout: float) -> bool:
        """Wait until the agent has started ``count`` reconciles."""

        def reached() -> bool:
            value = self.metric("temper_agent_reconciles_total")
            return value is not None and value >= count

        return wait_for(reached, timeout, interval=0.5)

    def layer_task_metrics(self) -> dict[str, float]:
        """The agent's ``temper_scx_layer_tasks`` gauge per layer, read from ``/metrics``."""
        prefix = 'temper_scx_layer_tasks{layer="'
        return {
            name[len(prefix) : -2]: value
            for name, value in self.metrics().items()
            if name.startswith(prefix)
        }

    def wait_layer_task_metrics(self, expected: dict[str, int], timeout: float) -> dict[str, float]:
        """Poll until the gauge reports at least ``expected`` tasks per layer; return it."""
        last: dict[str, float] = {}

        def reached() -> bool:
            nonlocal last
            last = self.layer_task_metrics()
            return all(last.get(layer, 0.0) >= count for layer, count in expected.items())

        wait_for(reached, timeout, interval=1.0)
        return last

    def log_contains(self, text: str) -> bool:
        return text in (read_text(self.log_path) or "")

    def terminate(self, timeout: float = AGENT_STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM the agent and return its exit code (None when it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class Pods:
    """Pods created in the API server for the VM's Node, with kubelet-style cgroups."""

    def __init__(self, kube: GuestKube, args: dict[str, Any]) -> None:
        self.kube = kube
        self.node = args["node"]
        self.namespace = args["namespace"]
        self.created: dict[str, Observed] = {}
        self.processes: list[subprocess.Popen[bytes]] = []

    def create(
        self,
        name: str,
        priority_class: str,
        requests: dict[str, str] | None = None,
        limits: dict[str, str] | None = None,
    ) -> Observed:
        """Create the pod in the API server; ``add_cgroups`` lays out its cgroups later."""
        manifest = pod_manifest(name, self.node, priority_class, requests or {}, limits or {})
        pod = self.kube.create_pod(self.namespace, manifest)
        uid = pod["metadata"]["uid"]
        qos = pod["status"]["qosClass"]
        pod_cgroup = kubelet_pod_cgroup(uid, qos)
        entry: Observed = {
            "uid": uid,
            "qos": qos,
            "pod_cgroup": pod_cgroup,
            "container": kubelet_container_cgroup(pod_cgroup, len(self.created) + 1),
            "cpu_request_millicores": _millicores((requests or {}).get("cpu")),
            "cpu_limit_millicores": _millicores((limits or {}).get("cpu")),
        }
        self.created[name] = entry
        return entry

    def add_cgroups(self, name: str, sleeper: bool) -> None:
        """Create the pod and container cgroups with the kubelet's CPU values.

        The kubelet writes ``cpu.weight`` from the CPU request and ``cpu.max`` from the CPU
        limit on both levels. With ``sleeper`` a sleeping task runs in the container.
        """
        entry = self.created[name]
        enable_cpu_controller(entry["container"])
        weight = str(cpu_weight_for_request(entry["cpu_request_millicores"] or 0))
        limit = entry["cpu_limit_millicores"]
        for directory in (entry["pod_cgroup"], entry["container"]):
            (CGROUP_ROOT / directory / "cpu.weight").write_text(weight)
            if limit is not None:
                quota = limit * CPU_PERIOD_US // 1000
                (CGROUP_ROOT / directory / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        if sleeper:
            self.processes.append(start_in_cgroup(entry["container"]))

    def cgroup_values(self, names: list[str] | None = None) -> dict[str, str | None]:
        """``cpu.idle``, ``cpu.weight`` and ``cpu.max`` of the pods' pod and container cgroups."""
        values: dict[str, str | None] = {}
        for name in names or list(self.created):
            entry = self.created[name]
            for directory in (entry["pod_cgroup"], entry["container"]):
                for file in CGROUP_FILES:
                    values[f"{directory}/{file}"] = read_text(CGROUP_ROOT / directory / file)
        return values

    def cleanup(self) -> None:
        stop_processes(self.processes)
        for name, entry in self.created.items():
            try:
                self.kube.delete_pod(self.namespace, name)
            except KubeError as error:
                print(f"guest: cannot delete pod {name}: {error}", flush=True)
            remove_cgroup(entry["container"], 2)


def _millicores(quantity: str | None) -> int | None:
    if quantity is None:
        return None
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def cpus_used_by_hogs(container: str, pod_cgroup: str) -> Observed:
    """Run busy loops in the container; return the CPUs its pod cgroup used and the layers."""
    hogs = start_hogs(container, LIMIT_HOGS)
    try:
        time.sleep(LIMIT_WARMUP_SECONDS)
        layers = layer_task_counts() if layered_attached() else None
        used = cgroup_cpus_used(pod_cgroup, LIMIT_WINDOW_SECONDS)
    finally:
        stop_processes(hogs)
    return {"used_cpus": used, "layer_tasks": layers}


class BlackoutWatcher(threading.Thread):
    """Polls the kernel's state until layered detached and attached again (the blackout)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.detached_at: float | None = None
        self.attached_at: float | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            attached = layered_attached()
            now = time.monotonic()
            if self.detached_at is None and not attached:
                self.detached_at = now
            elif self.detached_at is not None and attached:
                self.attached_at = now
                return
            time.sleep(0.05)

    def wait(self, timeout: float) -> float | None:
        """Wait for the end of the blackout; return its seconds, or None when none was seen."""
        self.join(timeout)
        self.stopped.set()
        self.join()
        if self.detached_at is None or self.attached_at is None:
            return None
        return round(self.attached_at - self.detached_at, 2)


class AgentScenario:
    """The agent's life on the VM's Node, step by step into ``observed``."""

    def __init__(self, plan: dict[str, Any], args: dict[str, Any], observed: Observed) -> None:
        self.plan = plan
        self.args = args
        self.observed = observed
        self.kube = GuestKube.load(args["kube"])
        self.pods = Pods(self.kube, args)
        self.node_path = f"/api/v1/nodes/{args['node']}"
        self.namespace_path = f"/api/v1/namespaces/{args['safe_mode_namespace']}"
        self.agents: list[Agent] = []
        self.limit_windows: list[Observed] = []
        self.observed["cpu_limits"] = self.limit_windows

    # -- helpers --------------------------------------------------------------------------

    def agent(self, name: str, port: int, *extra: str) -> Agent:
        started = Agent(self.plan, self.args, name, port, *extra)
        self.agents.append(started)
        return started

    def annotation(self) -> str | None:
        return self.kube.node_annotation(self.args["node"], SCHEDULER_ANNOTATION)

    def wait_annotation(self, value: str, timeout: float) -> float | None:
        return self.kube.wait_node_annotation(
            self.args["node"], SCHEDULER_ANNOTATION, value, timeout
        )

    def set_safe_mode(self, path: str, requested: bool) -> None:
        value = "true" if requested else None
        self.kube.merge_patch(path, {"metadata": {"annotations": {SAFE_MODE_ANNOTATION: value}}})

    def layer_prefixes(self, config_path: Path) -> dict[str, list[str]]:
        """CgroupPrefix values per layer of the agent's config file, in layer order."""
        config = json.loads(config_path.read_text())
        return {
            layer["name"]: [m["CgroupPrefix"] for block in layer["matches"] for m in block]
            for layer in config
        }

    def runq_delay_beside_hogs(self) -> float:
        """The latency loop's run-queue delay in the high pod beside hogs in the batch pod.

        All of them run on one CPU, so the latency loop competes with the hogs directly. The
        loop starts first, because its interpreter would start slowly beside the hogs.
        """
        batch, web = self.pods.created["batch"], self.pods.created["web"]
        loop = start_latency_loop(web["container"], cpu=RUNQ_CPU)
        hogs = start_hogs(batch["container"], BATCH_HOGS, cpu=RUNQ_CPU)
        try:
            time.sleep(1.0)
            return mean_runq_delay_us(loop.pid, RUNQ_WINDOW_SECONDS)
        finally:
            stop_processes([*hogs, loop])

    def limit_window(self, scheduler: str, role: str, limit_millicores: int) -> None:
        """Measure two busy loops in the service cgroup or a limited pod, and record it."""
        if role == "service":
            container = pod_cgroup = SERVICE_CGROUP
            quota = limit_millicores * CPU_PERIOD_US // 1000
            (CGROUP_ROOT / SERVICE_CGROUP / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        else:
            entry = self.pods.created[role]
            container, pod_cgroup = entry["container"], entry["pod_cgroup"]
        window = {"scheduler": scheduler, "cgroup": role, "limit_cpus": limit_millicores / 1000}
        self.limit_windows.append(window | cpus_used_by_hogs(container, pod_cgroup))

    def steps(self) -> list[tuple[str, Callable[[Observed], None]]]:
        return [
            ("setup", self.setup),
            ("stock_mode", self.stock_mode),
            ("start", self.start),
            ("limits", self.limits),
            ("adopt", self.adopt),
            ("safe_mode", self.safe_mode),
            ("config_change", self.config_change),
            ("stop", self.stop),
            ("restored", self.restored),
        ]

    # -- steps ----------------------------------------------------------------------------

    def setup(self, step: Observed) -> None:
        """Pods in every tier but critical, two with CPU limits, and the service cgroup.

        Critical pods come later (``config_change``): their fenced CPU would leave the other
        layers a single CPU and hide what the CPU-limit windows measure.
        """
        # A small high pod beside a large background pod: under the stock scheduler the
        # latency loop in the high pod waits behind the hogs' larger CPU weight.
        self.pods.create("web", "temper-high", {"cpu": "100m"})
        self.pods.create("app", "temper-normal", {"cpu": "500m"})
        self.pods.create("etl", "temper-low")
        self.pods.create("batch", "temper-background", {"cpu": "2"})
        self.pods.create("capped", "temper-normal", {"cpu": "100m"}, {"cpu": "1"})
        self.pods.create("capped-low", "temper-low", {"cpu": "100m"}, {"cpu": "200m"})
        for name in SETUP_PODS:
            self.pods.add_cgroups(name, sleeper=name not in ("capped", "capped-low"))
        enable_cpu_controller(SERVICE_CGROUP)
        self.observed["pods"] = self.pods.created
        step["values_before"] = self.pods.cgroup_values()

    def stock_mode(self, step: Observed) -> None:
        """Stock-kernel mode: the guest has no kernel config yet, so scx_layered cannot load."""
        step["sched_ext_state"] = sched_ext_state()
        step["before_us"] = self.runq_delay_beside_hogs()
        self.limit_window("cfs", "service", 200)

        agent = self.agent("first", 9402, "--stock-kernel-mode")
        step["mode_on_seconds"] = self.wait_annotation(
            "stock-kernel-mode", AGENT_READY_TIMEOUT_SECONDS
        )
        batch_idle = CGROUP_ROOT / self.pods.created["batch"]["pod_cgroup"] / "cpu.idle"
        step["batch_idle_set"] = wait_for(lambda: read_text(batch_idle) == "1", 30.0)
        step["values_during"] = self.pods.cgroup_values()
        step["during_us"] = self.runq_delay_beside_hogs()
        step["sched_ext_state_during"] = sched_ext_state()
        step["agent_running"] = agent.process.poll() is None

    def start(self, step: Observed) -> None:
        """The kernel config appears: the agent leaves stock-kernel mode for scx_layered."""
        agent = self.agents[-1]
        config = Path(f"/boot/config-{os.uname().release}")
        config.write_bytes(Path(self.plan["kernel_config"]).read_bytes())
        started = time.monotonic()
        step["attached"] = wait_for(layered_attached, ATTACH_TIMEOUT_SECONDS + 30, interval=0.5)
        step["attach_seconds"] = round(time.monotonic() - started, 1)
        step["ops"] = sched_ext_ops()
        step["annotation_seconds"] = self.wait_annotation("scx_layered", 60.0)
        # The mode ended: every value it changed is back.
        step["values_after_mode"] = self.pods.cgroup_values()
        step["layer_prefixes"] = self.layer_prefixes(agent.config_path)
        expected = {"high": 1, "low": 1, "background": 1}
        step["layer_tasks"] = wait_for_layer_counts(expected)
        step["layer_task_metrics"] = agent.wait_layer_task_metrics(expected, 60.0)

    def limits(self, step: Observed) -> None:
        """CPU limits under the agent's layers: the service's quota fails, -limited layers hold."""
        self.limit_window("scx", "service", 200)
        self.limit_window("scx", "service", 1000)
        self.limit_window("scx", "capped", 1000)
        self.limit_window("scx", "capped-low", 200)
        step["windows"] = len(self.limit_windows)

    def adopt(self, step: Observed) -> None:
        """SIGKILL the first agent; a second one adopts the running scheduler unchanged."""
        first = self.agents[-1]
        step["pids_before"] = scx_layered_pids()
        step["enable_seq_before"] = sched_ext_enable_seq()
        config_before = first.config_path.read_bytes()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        step["attached_after_kill"] = layered_attached()

        second = self.agent("second", 9403)
        started = time.monotonic()
        step["ready"] = wait_for(second.ready, AGENT_READY_TIMEOUT_SECONDS, interval=0.5)
        # Two reconciles started: the first one, which would have restarted the scheduler,
        # has finished.
        step["reconciled"] = second.wait_reconciles(2, 60.0)
        step["ready_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(3.0)
        step["pids_after"] = scx_layered_pids()
        step["state_file_pid"] = json.loads(second.state_file.read_text()).get("pid")
        step["enable_seq_after"] = sched_ext_enable_seq()
        step["attached_after"] = layered_attached()
        step["config_unchanged"] = second.config_path.read_bytes() == config_before
        step["adoption_logged"] = second.log_contains("adopted running scheduler")
        step["annotation"] = self.annotation()

    def safe_mode(self, step: Observed) -> None:
        """Safe mode on the Node, then on the namespace, then lifted: stop, stay, resume."""
        agent = self.agents[-1]
        started = time.monotonic()
        self.set_safe_mode(self.node_path, True)
        step["node_stopped"] = wait_for(
            lambda: sched_ext_state() == "disabled", SAFE_MODE_TIMEOUT_SECONDS, interval=0.1
        )
        step["node_stop_seconds"] = round(time.monotonic() - started, 1)
        step["node_annotation_seconds"] = self.wait_annotation("safe-mode", 30.0)
        step["pids_in_safe_mode"] = scx_layered_pids()

        # The namespace takes over before the Node's request is lifted: still safe mode.
        self.set_safe_mode(self.namespace_path, True)
        self.set_safe_mode(self.node_path, False)
        reconciles = agent.metric("temper_agent_reconciles_total") or 0.0
        step["reconciled_after_lift"] = agent.wait_reconciles(reconciles + 2, 60.0)
        step["state_with_namespace"] = sched_ext_state()
        step["annotation_with_namespace"] = self.annotation()

        started = time.monotonic()
        self.set_safe_mode(self.namespace_path, False)
        step["resumed"] = wait_for(layered_attached, ATTACH_TIMEOUT_SECONDS + 30, interval=0.2)
        step["resume_seconds"] = round(time.monotonic() - started, 1)
        step["resume_annotation_seconds"] = self.wait_annotation("scx_layered", 30.0)
        step["blackout_seconds_metric"] = agent.metric("temper_agent_scheduler_blackout_seconds")
        step["restarts_metric"] = agent.metric("temper_agent_scheduler_restarts")

    def config_change(self, step: Observed) -> None:
        """Two critical pods change the config: one restart, its blackout measured."""
        agent = self.agents[-1]
        step["pids_before"] = scx_layered_pids()
        step["enable_seq_before"] = sched_ext_enable_seq()
        # The watcher starts first: creating the pods may take long under emulation.
        watcher = BlackoutWatcher()
        watcher.start()
        self.pods.create("api", "temper-critical", {"cpu": "500m"})
        guaranteed = {"cpu": "500m", "memory": "64Mi"}
        self.pods.create("db", "temper-critical", guaranteed, guaranteed)
        for name in ("api", "db"):
            self.pods.add_cgroups(name, sleeper=True)
        step["new_pod_prefixes"] = [
            self.pods.created[name]["pod_cgroup"] + "/" for name in ("api", "db")
        ]

        step["observed_blackout_seconds"] = watcher.wait(60.0 + ATTACH_TIMEOUT_SECONDS)
        step["restarts_reported"] = wait_for(
            lambda: (agent.metric("temper_agent_scheduler_restarts") or 0.0) >= 1, 30.0
        )
        metrics = agent.metrics()
        step["restarts_metric"] = metrics.get("temper_agent_scheduler_restarts")
        step["blackout_metric"] = metrics.get("temper_agent_scheduler_blackout_seconds")
        step["pids_after"] = scx_layered_pids()
        step["enable_seq_after"] = sched_ext_enable_seq()
        step["layer_prefixes"] = self.layer_prefixes(agent.config_path)
        expected = {"critical": 2, "high": 1, "low": 1, "background": 1}
        step["layer_tasks"] = wait_for_layer_counts(expected)
        step["layer_task_metrics"] = agent.wait_layer_task_metrics(expected, 60.0)
        step["annotation"] = self.annotation()

    def stop(self, step: Observed) -> None:
        """SIGTERM: the agent stops scx_layered and records the stock scheduler on its Node."""
        agent = self.agents[-1]
        step["exit_code"] = agent.terminate()
        step["state_after"] = sched_ext_state()
        step["pids_after"] = scx_layered_pids()
        step["annotation"] = self.annotation()

    def restored(self, step: Observed) -> None:
        """Back on the stock scheduler with the kubelet's values: the delay is back too."""
        step["values"] = self.pods.cgroup_values(SETUP_PODS)
        step["restored_us"] = self.runq_delay_beside_hogs()

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> None:
        for name, step_function in self.steps():
            step: Observed = {}
            self.observed[name] = step
            started = time.monotonic()
            try:
                step_function(step)
            finally:
                step["seconds"] = round(time.monotonic() - started, 1)

    def cleanup(self) -> None:
        for agent in self.agents:
            agent.kill()
        self.observed["agent_logs"] = {
            agent.log_path.name: log_tail(agent.log_path, 30) for agent in self.agents
        }
        for pid in scx_layered_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        wait_for(lambda: sched_ext_state() == "disabled", DETACH_TIMEOUT_SECONDS)
        for path in (self.node_path, self.namespace_path):
            try:
                self.set_safe_mode(path, False)
            except KubeError as error:
                print(f"guest: cannot clear safe mode on {path}: {error}", flush=True)
        self.pods.cleanup()
        remove_cgroup(SERVICE_CGROUP, 2)


def check_agent(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """Run the agent scenario. A failing step ends it, with its traceback in ``error``.

    Steps: stock-kernel mode without a kernel config; scx_layered once the config is
    installed (the check installs it); CPU limits under the agent's layers; adoption by a
    second agent after the first was SIGKILLed; safe mode on the Node and the namespace;
    a restart for new critical pods; the stop on SIGTERM; the stock scheduler afterwards.
    """
    observed: Observed = {}
    scenario = AgentScenario(plan, args, observed)
    try:
        scenario.run()
    except Exception:
        observed["error"] = traceback.format_exc()
    finally:
        scenario.cleanup()
    return observed
