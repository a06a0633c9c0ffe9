"""scx_layered on a real sched_ext kernel: attach, detach, crash recovery, the kernel config
the load needs and a config shape that fails to load.

All checks ran in the session's VM boots (see ``conftest.py``); each test reads its check's
observations. The VMs run under QEMU's emulator, so the tests check behaviour and never
latency. Task placement in tier layers and CPU limits are checked with the agent in
``test_agent_vm.py``.
"""

import json

import pytest

from agent.validation import LayerConfigError, validate_layer_config
from tests.vm.conftest import (
    GOLDEN_CONFIGS,
    GOLDEN_DIR,
    PREEMPT_MIX_GOLDEN,
    SIGKILL_GOLDEN,
    VM_LOCK_TIMEOUT_SECONDS,
    VM_TIMEOUT_SECONDS,
    observed,
    preempt_mix_config,
)
from tests.vm.rig import VmRun

# pytest-timeout counts the session fixture's lock wait and boot against the first test.
pytestmark = [
    pytest.mark.vm,
    pytest.mark.controlplane,
    pytest.mark.timeout(VM_LOCK_TIMEOUT_SECONDS + VM_TIMEOUT_SECONDS + 60),
]


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
    if golden == SIGKILL_GOLDEN:
        # The sigkill check attached this config; it ends with SIGKILL instead of SIGTERM.
        sigkill = observed(vm_run, "sigkill")
        assert sigkill["attached"], f"scx_layered log (tail):\n{sigkill['log']}"
        assert sigkill["ops"].startswith("layered")
        return
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


def test_network_reaches_host_apiserver(vm_run: VmRun) -> None:
    network = observed(vm_run, "network")
    assert network["interface_failures"] == []
    assert network["error"] is None
    assert network["version"].startswith("v1.")


def test_missing_kernel_config_reported(vm_run: VmRun) -> None:
    release = observed(vm_run, "kernel")["release"]
    missing = observed(vm_run, "kernel-config:missing")
    assert missing["supported"] is False
    assert "no readable kernel config" in missing["reason"]
    assert f"/boot/config-{release}" in missing["reason"]


def test_installed_kernel_config_found(vm_run: VmRun) -> None:
    release = observed(vm_run, "kernel")["release"]
    installed = observed(vm_run, "kernel-config:installed")
    assert installed["supported"] is True, installed["reason"]
    assert installed["kernel_config"] == f"/boot/config-{release}"


def test_open_preempt_mix_rejected_by_validator() -> None:
    golden = json.loads((GOLDEN_DIR / f"{PREEMPT_MIX_GOLDEN}.json").read_text())
    validate_layer_config(golden, cpus=8)
    with pytest.raises(LayerConfigError) as raised:
        validate_layer_config(preempt_mix_config(), cpus=8)
    [problem] = raised.value.problems
    assert "E2BIG" in problem


def test_open_preempt_mix_fails_to_load(vm_run: VmRun) -> None:
    """The validator's rule holds for this scx_layered: the mixed config does not load."""
    rejected = observed(vm_run, "preempt-mix")
    log = f"scx_layered log (tail):\n{rejected['log']}"
    assert not rejected["attached"], log
    assert rejected["exit_code_before_attach"] not in (None, 0), log
    assert "E2BIG" in rejected["log"] or "Argument list too long" in rejected["log"], log
    assert rejected["state_after"] == "disabled", log
