"""The session's sched_ext VM: one boot runs every guest check, the tests assert on the results.

The VM tests are skipped when ``scripts/vm-rig.sh`` has not prepared the rig, unless
``TEMPER_VM_REQUIRED=1`` is set (as CI should), which turns the missing rig into an error.
"""

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cgroups import CgroupLayout, CgroupVersion, container_cgroup_name
from agent.layers import compute_layer_plan
from agent.podinfo import PodInfo, QosClass
from agent.settings import CgroupDriver
from agent.topology import Topology
from temper.tiers import Tier
from tests.vm.rig import RIG_SCRIPT, VM_CPUS, Check, Rig, VmError, VmRun, cache_dir, run_checks

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
GOLDEN_CONFIGS = sorted(path.stem for path in GOLDEN_DIR.glob("*.json"))
LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V2, CgroupDriver.SYSTEMD)
# One boot with 11 golden configs took 6.5 to 7 minutes on a shared 2-core machine, because
# each scx_layered attach spends 10-50 s loading its BPF programs under emulation, so every
# further golden config adds about 30 s. The limit leaves room for a busier machine and keeps
# the VM part within a 15-minute CI budget.
VM_TIMEOUT_SECONDS = 840.0
# Another test session's VM on the same machine runs to the end before this one boots.
VM_LOCK_TIMEOUT_SECONDS = 900.0

_runs: list[VmRun] = []


def tier_pods() -> list[PodInfo]:
    """One pod per tier and QoS shape, with fixed UIDs so failures are reproducible."""
    shapes = [
        (Tier.CRITICAL, QosClass.GUARANTEED),
        (Tier.CRITICAL, QosClass.BURSTABLE),
        (Tier.HIGH, QosClass.BURSTABLE),
        (Tier.NORMAL, QosClass.BURSTABLE),
        (Tier.LOW, QosClass.BEST_EFFORT),
        (Tier.BACKGROUND, QosClass.BURSTABLE),
    ]
    pods = []
    for index, (tier, qos) in enumerate(shapes):
        uid = str(uuid.UUID(int=0x7E3 << 64 | index + 1))
        pods.append(
            PodInfo(
                key=f"vm/pod-{index}",
                uid=uid,
                cgroup_uid=uid,
                tier=tier,
                temper_class=True,
                qos=qos,
                cpu_request_millicores=500,
                cpu_limit_millicores=None,
                phase="Running",
            )
        )
    return pods


def tiers_check(workdir: Path) -> Check:
    """Config from the agent's layer planner for a 2-CPU node, one container task per pod."""
    pods = tier_pods()
    config = compute_layer_plan(pods, LAYOUT, Topology(cpus=VM_CPUS)).config
    config_path = workdir / "tiers.json"
    config_path.write_text(json.dumps(config, indent=2))
    tasks = []
    for index, pod in enumerate(pods):
        pod_cgroup = LAYOUT.layered_prefix(pod.cgroup_uid, pod.qos).rstrip("/")
        container = container_cgroup_name(f"containerd://{index + 1:064x}", LAYOUT.driver)
        tasks.append({"cgroup": f"{pod_cgroup}/{container}", "layer": pod.tier.value})
    args = {"config": str(config_path), "log": str(workdir / "tiers.log"), "tasks": tasks}
    return Check("tiers", "tiers", args)


def vm_checks(workdir: Path) -> list[Check]:
    checks = [Check("kernel", "kernel")]
    for name in GOLDEN_CONFIGS:
        args = {"config": str(GOLDEN_DIR / f"{name}.json"), "log": str(workdir / f"{name}.log")}
        checks.append(Check(f"attach:{name}", "attach", args))
    sigkill_args = {
        "config": str(GOLDEN_DIR / "2cpu-nosmt-mixed.json"),
        "log": str(workdir / "sigkill.log"),
    }
    checks.append(Check("sigkill", "sigkill", sigkill_args))
    checks.append(tiers_check(workdir))
    return checks


@pytest.fixture(scope="session")
def vm_run(request: pytest.FixtureRequest) -> Iterator[VmRun]:
    """Boot the sched_ext VM once for the session and run all guest checks.

    The work directory with the plan, results and logs is removed after a session without
    failures and kept otherwise. It lives outside pytest's temporary directories because
    other pytest sessions on the machine rotate those away.
    """
    rig = Rig.load(cache_dir())
    if rig is None:
        message = f"the sched_ext VM rig in {cache_dir()} is missing: run {RIG_SCRIPT}"
        if os.environ.get("TEMPER_VM_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    workdir = Path(tempfile.mkdtemp(prefix="temper-vm-"))
    failed_before = request.session.testsfailed
    try:
        run = run_checks(
            rig, vm_checks(workdir), workdir, VM_TIMEOUT_SECONDS, VM_LOCK_TIMEOUT_SECONDS
        )
    except VmError as error:
        pytest.fail(str(error))
    _runs.append(run)
    yield run
    if request.session.testsfailed == failed_before:
        shutil.rmtree(workdir)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for run in _runs:
        check_seconds = ", ".join(f"{name} {r.seconds} s" for name, r in run.checks.items())
        terminalreporter.write_line(
            f"sched_ext VM: waited {run.lock_wait_seconds} s for the VM lock, guest userspace "
            f"up after {run.boot_seconds} s, VM ran {run.vm_seconds} s, "
            f"work directory {run.workdir}"
        )
        terminalreporter.write_line(f"sched_ext VM checks: {check_seconds}")
