"""scx_layered on a real sched_ext kernel: attach, detach, crash recovery and task placement.

All checks ran in one VM boot (see ``conftest.py``); each test reads its check's observations.
The VM runs under QEMU's emulator, so the tests check behaviour and never latency.
"""

from typing import Any

import pytest

from temper.tiers import Tier
from tests.vm.conftest import (
    GOLDEN_CONFIGS,
    VM_LOCK_TIMEOUT_SECONDS,
    VM_TIMEOUT_SECONDS,
    tier_pods,
)
from tests.vm.rig import VmRun

# pytest-timeout counts the session fixture's lock wait and boot against the first test.
pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(VM_LOCK_TIMEOUT_SECONDS + VM_TIMEOUT_SECONDS + 60),
]

CATCH_ALL_LAYER = Tier.NORMAL.value


def observed(vm_run: VmRun, name: str) -> dict[str, Any]:
    result = vm_run.checks[name]
    assert result.error is None, f"guest check {name} raised:\n{result.error}"
    assert result.observed is not None
    return result.observed


def test_kernel_sched_ext_disabled_at_boot(vm_run: VmRun) -> None:
    kernel = observed(vm_run, "kernel")
    assert kernel["state"] == "disabled"
    assert kernel["root_ops"] is None


def test_kernel_cgroup_v2_with_cpu_controller(vm_run: VmRun) -> None:
    kernel = observed(vm_run, "kernel")
    assert kernel["cgroup_filesystems"] == ["cgroup2"]
    assert "cpu" in kernel["controllers"]


def test_kernel_has_btf(vm_run: VmRun) -> None:
    assert observed(vm_run, "kernel")["btf"] is True


@pytest.mark.parametrize("golden", GOLDEN_CONFIGS)
def test_golden_config_attaches(vm_run: VmRun, golden: str) -> None:
    attach = observed(vm_run, f"attach:{golden}")
    log = f"scx_layered log (tail):\n{attach['log']}"
    exit_code = attach["exit_code_before_attach"]
    outcome = "was still loading" if exit_code is None else f"exited with code {exit_code}"
    reason = f"{outcome} after {attach['attach_seconds']} s"
    assert attach["attached"], f"scx_layered did not attach with {golden}.json: {reason}\n{log}"
    assert attach["ops"].startswith("layered"), log
    assert attach["exit_code"] == 0, f"SIGTERM exit code {attach['exit_code']}\n{log}"
    assert attach["state_after"] == "disabled", log


def test_sigkill_disables_sched_ext(vm_run: VmRun) -> None:
    sigkill = observed(vm_run, "sigkill")
    log = f"scx_layered log (tail):\n{sigkill['log']}"
    assert sigkill["attached"], log
    assert sigkill["exit_code"] == -9, log
    assert sigkill["state_after"] == "disabled", log


def test_sigkill_leaves_busy_task_running(vm_run: VmRun) -> None:
    sigkill = observed(vm_run, "sigkill")
    assert sigkill["busy_on_sched_ext_while_attached"] is True
    assert sigkill["busy_alive"] is True
    assert sigkill["busy_on_sched_ext_after"] is False
    # Two idle vCPUs give the loop about 2 CPU seconds in the 2-second window.
    assert sigkill["busy_cpu_seconds_in_2s"] > 0.5


def test_tiers_scheduler_attached(vm_run: VmRun) -> None:
    tiers = observed(vm_run, "tiers")
    assert tiers["attached"], f"scx_layered log (tail):\n{tiers['log']}"
    assert tiers["exit_code"] == 0


@pytest.mark.parametrize("tier", [t for t in Tier if t.value != CATCH_ALL_LAYER])
def test_tiers_pod_tasks_in_tier_layer(vm_run: VmRun, tier: Tier) -> None:
    tiers = observed(vm_run, "tiers")
    expected = sum(1 for pod in tier_pods() if pod.tier is tier)
    layer_tasks = tiers["layer_tasks"]
    assert layer_tasks is not None, f"no stats from scx_layered\n{tiers['log']}"
    assert layer_tasks.get(tier.value) == expected, f"layer task counts: {layer_tasks}"


def test_tiers_catch_all_layer_has_other_tasks(vm_run: VmRun) -> None:
    tiers = observed(vm_run, "tiers")
    layer_tasks = tiers["layer_tasks"]
    assert layer_tasks is not None, f"no stats from scx_layered\n{tiers['log']}"
    # The normal pod's task shares the catch-all with every task outside the pods.
    assert layer_tasks.get(CATCH_ALL_LAYER, 0) > 1, f"layer task counts: {layer_tasks}"
