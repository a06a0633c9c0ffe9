"""The session's sched_ext VMs: one boot per group of guest checks, the tests assert on results.

The VM tests are skipped when ``scripts/vm-rig.sh`` has not prepared the rig, unless
``TEMPER_VM_REQUIRED=1`` is set (as CI should), which turns the missing rig into an error.
"""

import contextlib
import dataclasses
import fnmatch
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from temper.annotations import SAFE_MODE_REQUESTED
from temper.controlplane import LocalControlPlane
from tests.kubehelpers import create_nodes, delete_nodes, ensure_priority_classes
from tests.vm.rig import RIG_SCRIPT, VM_CPUS, Check, Rig, VmError, VmRun, cache_dir, run_checks

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
GOLDEN_CONFIGS = sorted(path.stem for path in GOLDEN_DIR.glob("*.json"))
# Each scx_layered attach spends 10-50 s loading its BPF programs under emulation on a quiet
# 2-core machine, and minutes when other work loads the machine. Each agent start imports
# for a minute or more. The limit keeps the VM part within a 15-minute CI budget, and
# TEMPER_VM_TIMEOUT_SECONDS raises it on a machine that is busy with other work.
VM_TIMEOUT_SECONDS = float(os.environ.get("TEMPER_VM_TIMEOUT_SECONDS", "900"))
# Another test session's VMs on the same machine run to the end before this session boots.
VM_LOCK_TIMEOUT_SECONDS = 900.0

_runs: list[VmRun] = []


# The golden config of the sigkill check, which also shows that it attaches.
SIGKILL_GOLDEN = "2cpu-nosmt-mixed"
PREEMPT_MIX_GOLDEN = "8cpu-smt2-profiled"
# Seconds the rejected config may take to fail: its verification runs into the verifier's
# limit of one million instructions, which took 290 s under emulation on a busy machine.
LOAD_FAILURE_TIMEOUT_SECONDS = 480.0


def preempt_mix_config() -> list[dict[str, Any]]:
    """The 8-CPU profiled golden config with its latency layer changed to Open with preempt.

    That puts a preempting Open layer beside the Open yield, low and background layers, and
    scx_layered 1.1.2 failed to load the result with E2BIG in this VM.
    """
    config: list[dict[str, Any]] = json.loads(
        (GOLDEN_DIR / f"{PREEMPT_MIX_GOLDEN}.json").read_text()
    )
    [latency] = [layer for layer in config if layer["name"] == "profile-latency"]
    latency["kind"] = {"Open": {"preempt": True, "slice_us": 1000, "weight": 400}}
    return config


# QEMU's user-mode network forwards this guest address to the host's loopback interface.
HOST_FROM_GUEST = "10.0.2.2"
SAFE_MODE_NAMESPACE = "temper"
# Checks that every selection keeps, because the others need the network or a kernel config.
INFRASTRUCTURE_CHECKS = (
    "kernel",
    "network",
    "kernel-config:missing",
    "kernel-config:installed",
    "kernel-config:schedulers",
)


@dataclasses.dataclass(frozen=True)
class GuestCluster:
    """The API objects and credential files that the guest's agent uses."""

    node: str
    namespace: str
    kubeconfig: Path
    connection: Path


def write_guest_credentials(control_plane: LocalControlPlane, workdir: Path) -> tuple[Path, Path]:
    """Write the agent's kubeconfig and the connection file of ``guestkube.py``.

    Both point at the host's API server through 10.0.2.2 and check its certificate for
    ``localhost``, a name the certificate carries. The kubeconfig is JSON, which YAML
    loaders read.
    """
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    server = f"https://{HOST_FROM_GUEST}:{control_plane.apiserver_port}"
    for entry in config["clusters"]:
        entry["cluster"]["server"] = server
        entry["cluster"]["tls-server-name"] = "localhost"
    kubeconfig = workdir / "guest-kubeconfig.json"
    kubeconfig.write_text(json.dumps(config, indent=2))
    [cluster] = config["clusters"]
    [user] = config["users"]
    connection = {
        "server": server,
        "tls_server_name": "localhost",
        "certificate_authority": cluster["cluster"]["certificate-authority"],
        "client_certificate": user["user"]["client-certificate"],
        "client_key": user["user"]["client-key"],
    }
    connection_path = workdir / "guest-connection.json"
    connection_path.write_text(json.dumps(connection, indent=2))
    return kubeconfig, connection_path


def clear_safe_mode(core: k8s.CoreV1Api) -> None:
    """Create the safe-mode namespace when missing and remove any safe-mode request on it."""
    try:
        core.create_namespace({"metadata": {"name": SAFE_MODE_NAMESPACE}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    patch = {"metadata": {"annotations": {SAFE_MODE_REQUESTED: None}}}
    core.patch_namespace(SAFE_MODE_NAMESPACE, patch)


@contextlib.contextmanager
def guest_cluster(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, workdir: Path
) -> Iterator[GuestCluster]:
    """A Node for the VM (2 CPUs), a namespace for its pods and the guest's credentials."""
    core = k8s.CoreV1Api(api_client)
    ensure_priority_classes(api_client)
    clear_safe_mode(core)
    suffix = uuid.uuid4().hex[:6]
    node, namespace = f"vm-{suffix}", f"vm-{suffix}"
    create_nodes(core, [node], cpu=str(VM_CPUS))
    core.create_namespace({"metadata": {"name": namespace}})
    kubeconfig, connection = write_guest_credentials(control_plane, workdir)
    try:
        yield GuestCluster(node, namespace, kubeconfig, connection)
    finally:
        # No kubelet runs: pods go with a grace period of 0, the namespace stays Terminating.
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        core.delete_namespace(namespace)
        delete_nodes(core, [node])
        clear_safe_mode(core)


def agent_args(cluster: GuestCluster, agent_dir: Path) -> dict[str, str]:
    return {
        "kube": str(cluster.connection),
        "kubeconfig": str(cluster.kubeconfig),
        "node": cluster.node,
        "namespace": cluster.namespace,
        "safe_mode_namespace": SAFE_MODE_NAMESPACE,
        "agent_dir": str(agent_dir),
    }


def selected(name: str) -> bool:
    """Whether ``TEMPER_VM_CHECKS`` (comma-separated patterns, default all) selects a check."""
    patterns = [p.strip() for p in os.environ.get("TEMPER_VM_CHECKS", "").split(",") if p.strip()]
    if not patterns or name in INFRASTRUCTURE_CHECKS:
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def vm_checks(workdir: Path, cluster: GuestCluster) -> dict[str, list[Check]]:
    """Every guest check, in two groups that boot side by side, each in the order it runs.

    ``agent`` starts while the guest has no kernel config, which makes the agent fall back to
    stock-kernel mode, and the agent check installs the config halfway; the preempt-mix load
    comes after it. ``schedulers`` installs the config first, then attaches every golden
    config. The two groups take about as long each.
    """
    # Each group's directory is the only one its guest can write to (see run_checks).
    agent_dir, schedulers_dir = workdir / "agent", workdir / "schedulers"
    agent_dir.mkdir(exist_ok=True)
    preempt_path = agent_dir / "preempt-mix.json"
    preempt_path.write_text(json.dumps(preempt_mix_config(), indent=2))
    preempt_args = {
        "config": str(preempt_path),
        "log": str(agent_dir / "preempt-mix.log"),
        "timeout_seconds": LOAD_FAILURE_TIMEOUT_SECONDS,
    }
    agent = [
        Check("kernel", "kernel"),
        Check("network", "network", {"kube": str(cluster.connection)}),
        Check("kernel-config:missing", "kernel_config", {"install": False}),
        Check("agent", "agent", agent_args(cluster, agent_dir / "node")),
        Check("kernel-config:installed", "kernel_config", {"install": True}),
        Check("preempt-mix", "load_failure", preempt_args),
    ]
    schedulers = [Check("kernel-config:schedulers", "kernel_config", {"install": True})]
    for name in GOLDEN_CONFIGS:
        if name == SIGKILL_GOLDEN:
            continue
        log = schedulers_dir / f"{name}.log"
        args = {"config": str(GOLDEN_DIR / f"{name}.json"), "log": str(log)}
        schedulers.append(Check(f"attach:{name}", "attach", args))
    sigkill_args = {
        "config": str(GOLDEN_DIR / f"{SIGKILL_GOLDEN}.json"),
        "log": str(schedulers_dir / "sigkill.log"),
    }
    schedulers.append(Check("sigkill", "sigkill", sigkill_args))
    groups = {
        "agent": [check for check in agent if selected(check.name)],
        "schedulers": [check for check in schedulers if selected(check.name)],
    }
    # A group of infrastructure checks alone is not worth a boot.
    return {
        name: checks
        for name, checks in groups.items()
        if any(check.name not in INFRASTRUCTURE_CHECKS for check in checks)
    }


@pytest.fixture(scope="session")
def vm_run(request: pytest.FixtureRequest) -> Iterator[VmRun]:
    """Boot the sched_ext VMs once for the session (two, side by side) and run all checks.

    The guest's agent checks use the session's control plane on the host, reached through
    QEMU's user-mode network. The work directory with the plan, results and logs is removed
    after a session without failures and kept otherwise. It lives outside pytest's temporary
    directories because other pytest sessions on the machine rotate those away.
    """
    rig = Rig.load(cache_dir())
    if rig is None:
        message = f"the sched_ext VM rig in {cache_dir()} is missing: run {RIG_SCRIPT}"
        if os.environ.get("TEMPER_VM_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    control_plane: LocalControlPlane = request.getfixturevalue("control_plane")
    api_client: k8s.ApiClient = request.getfixturevalue("api_client")
    workdir = Path(tempfile.mkdtemp(prefix="temper-vm-"))
    failed_before = request.session.testsfailed
    with guest_cluster(control_plane, api_client, workdir) as cluster:
        try:
            run = run_checks(
                rig,
                vm_checks(workdir, cluster),
                workdir,
                VM_TIMEOUT_SECONDS,
                VM_LOCK_TIMEOUT_SECONDS,
            )
        except VmError as error:
            pytest.fail(str(error))
    _runs.append(run)
    yield run
    if request.session.testsfailed == failed_before:
        shutil.rmtree(workdir)


def observed(vm_run: VmRun, name: str) -> dict[str, Any]:
    """What the guest observed in check ``name``; skip when TEMPER_VM_CHECKS left it out."""
    if name not in vm_run.checks:
        pytest.skip(f"guest check {name} is not selected by TEMPER_VM_CHECKS")
    result = vm_run.checks[name]
    assert result.error is None, f"guest check {name} raised:\n{result.error}"
    assert result.observed is not None
    return result.observed


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for run in _runs:
        terminalreporter.write_line(
            f"sched_ext VM: waited {run.lock_wait_seconds} s for the VM lock, the VMs ran "
            f"{run.wall_seconds} s side by side, work directory {run.workdir}"
        )
        for boot in run.boots:
            terminalreporter.write_line(
                f"sched_ext VM {boot.name}: guest userspace up after {boot.boot_seconds} s, "
                f"VM ran {boot.vm_seconds} s, vng and QEMU used {boot.cpu_seconds} CPU seconds"
            )
        check_seconds = ", ".join(f"{name} {r.seconds} s" for name, r in run.checks.items())
        terminalreporter.write_line(f"sched_ext VM checks: {check_seconds}")
        for line in measurement_lines(run):
            terminalreporter.write_line(f"sched_ext VM (emulated, behaviour only): {line}")


def measurement_lines(run: VmRun) -> list[str]:
    """The numbers the guest measured, for the test log; missing values print as None."""
    agent = run.checks.get("agent")
    if agent is None or agent.observed is None:
        return []
    result = agent.observed
    lines = [
        f"cpu.max {window['limit_cpus']} CPUs, {window['cgroup']} cgroup under "
        f"{window['scheduler']}: used {window['used_cpus']} CPUs"
        for window in result.get("cpu_limits", [])
    ]
    stock = result.get("stock_mode") or {}
    restored = result.get("restored") or {}
    lines.append(
        f"run-queue delay per wake-up beside background hogs: before {stock.get('before_us')} "
        f"us, stock-kernel mode {stock.get('during_us')} us, restored "
        f"{restored.get('restored_us')} us"
    )
    safe_mode = result.get("safe_mode") or {}
    change = result.get("config_change") or {}
    lines.append(
        f"agent: safe mode stopped scx_layered after {safe_mode.get('node_stop_seconds')} s, "
        f"resumed after {safe_mode.get('resume_seconds')} s; config-change blackout "
        f"{change.get('observed_blackout_seconds')} s observed, "
        f"{change.get('blackout_metric')} s reported by the agent"
    )
    steps = {k: v["seconds"] for k, v in result.items() if isinstance(v, dict) and "seconds" in v}
    lines.append(f"agent steps (seconds): {steps}")
    return lines
