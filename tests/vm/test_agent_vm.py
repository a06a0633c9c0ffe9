"""The node agent itself in the sched_ext VM, against the host's real kube-apiserver.

The guest runs ``temper agent`` on pods created in the API server and bound to the VM's
Node, with kubelet-style cgroups (systemd driver, cgroup v2) and real processes in them
(``guestagent.py``). All checks ran in the session's VM boots (see ``conftest.py``). The
VM runs under QEMU's emulator: durations only show that each step happened in order, and
every bound on time or CPU use is wide. These tests verify behaviour, never latency.
"""

from typing import Any

import pytest

from tests.vm.conftest import VM_LOCK_TIMEOUT_SECONDS, VM_TIMEOUT_SECONDS, observed
from tests.vm.rig import VmRun

pytestmark = [
    pytest.mark.vm,
    pytest.mark.controlplane,
    pytest.mark.timeout(VM_LOCK_TIMEOUT_SECONDS + VM_TIMEOUT_SECONDS + 60),
]

# Seconds from the safe-mode request to a stopped scheduler: watch event, 2 s debounce,
# reconcile and scx_layered's exit, all under emulation.
SAFE_MODE_STOP_SECONDS = 30.0


def step(vm_run: VmRun, name: str) -> dict[str, Any]:
    """One step of the agent scenario; fail with the error and agent logs if it broke there."""
    result = observed(vm_run, "agent")
    logs = "\n".join(f"--- {log}\n{text}" for log, text in result["agent_logs"].items())
    error = result.get("error")
    assert name in result, f"the scenario ended before step {name}:\n{error}\n{logs}"
    steps = [key for key in result if isinstance(result[key], dict) and "seconds" in result[key]]
    if error is not None and steps[-1] == name:
        pytest.fail(f"step {name} failed:\n{error}\n{logs}")
    return dict(result[name], pods=result["pods"])


def limit_window(vm_run: VmRun, scheduler: str, cgroup: str, limit_cpus: float) -> dict[str, Any]:
    step(vm_run, "limits")
    windows = observed(vm_run, "agent")["cpu_limits"]
    for window in windows:
        if (window["scheduler"], window["cgroup"], window["limit_cpus"]) == (
            scheduler,
            cgroup,
            limit_cpus,
        ):
            return dict(window)
    raise AssertionError(f"no window {scheduler} {cgroup} {limit_cpus} in {windows}")


def cgroup_file(pods: dict[str, Any], pod: str, file: str) -> str:
    return f"{pods[pod]['pod_cgroup']}/{file}"


def prefix(pods: dict[str, Any], pod: str) -> str:
    return f"{pods[pod]['pod_cgroup']}/"


# -- stock-kernel mode (no kernel config yet) --------------------------------------------


def test_stock_mode_without_kernel_config(vm_run: VmRun) -> None:
    stock = step(vm_run, "stock_mode")
    assert stock["mode_on_seconds"] is not None
    assert stock["agent_running"]
    assert stock["sched_ext_state"] == "disabled"
    assert stock["sched_ext_state_during"] == "disabled"


def test_stock_mode_sets_cpu_idle_on_v2(vm_run: VmRun) -> None:
    stock = step(vm_run, "stock_mode")
    before = step(vm_run, "setup")["values_before"]
    pods = stock["pods"]
    assert stock["batch_idle_set"]
    assert before[cgroup_file(pods, "batch", "cpu.idle")] == "0"
    assert stock["values_during"][cgroup_file(pods, "batch", "cpu.idle")] == "1"
    assert stock["values_during"][cgroup_file(pods, "capped-low", "cpu.idle")] == "1"
    assert stock["values_during"][cgroup_file(pods, "web", "cpu.idle")] == "0"
    assert stock["values_during"][cgroup_file(pods, "app", "cpu.idle")] == "0"


def test_stock_mode_yields_to_latency_task(vm_run: VmRun) -> None:
    """The background pod's hogs yield: the high pod's run-queue delay drops."""
    before = step(vm_run, "stock_mode")["before_us"]
    during = step(vm_run, "stock_mode")["during_us"]
    restored = step(vm_run, "restored")["restored_us"]
    # Measured on either side of the mode, so that drifting load on the host shows.
    assert during < min(before, restored) / 2, (before, during, restored)


def test_stock_mode_end_restores_values(vm_run: VmRun) -> None:
    """scx_layered took over: the mode ended and every value it changed is back."""
    before = step(vm_run, "setup")["values_before"]
    during = step(vm_run, "stock_mode")["values_during"]
    after = step(vm_run, "start")["values_after_mode"]
    changed = sorted(key for key in before if during[key] != before[key])
    assert changed, "stock-kernel mode changed no cgroup value"
    assert {key: after[key] for key in before} == before, f"changed while on: {changed}"


# -- scx_layered started by the agent ----------------------------------------------------


def test_agent_starts_scx_layered(vm_run: VmRun) -> None:
    start = step(vm_run, "start")
    assert start["attached"]
    assert start["ops"].startswith("layered")
    assert start["annotation_seconds"] is not None


def test_agent_config_from_pods(vm_run: VmRun) -> None:
    start = step(vm_run, "start")
    pods, layers = start["pods"], start["layer_prefixes"]
    assert layers["high"] == [prefix(pods, "web")]
    assert layers["low"] == [prefix(pods, "etl")]
    assert layers["background"] == [prefix(pods, "batch")]
    assert layers["normal-limited"] == [prefix(pods, "capped")]
    assert layers["low-limited"] == [prefix(pods, "capped-low")]
    assert "critical" not in layers
    assert list(layers)[-1] == "normal"


def test_agent_pod_tasks_in_tier_layers(vm_run: VmRun) -> None:
    counts = step(vm_run, "start")["layer_tasks"]
    assert counts is not None, "no stats from scx_layered"
    for layer in ("high", "low", "background"):
        assert counts[layer] == 1, counts
    # The normal pod's task shares the catch-all with every task outside the pods.
    assert counts["normal"] > 1, counts


def test_agent_metrics_report_layer_tasks(vm_run: VmRun) -> None:
    metrics = step(vm_run, "start")["layer_task_metrics"]
    for layer in ("high", "low", "background"):
        assert metrics.get(layer) == 1, metrics


# -- CPU limits under the agent's layers ---------------------------------------------------


def test_cfs_enforces_cpu_max(vm_run: VmRun) -> None:
    """The control: the stock scheduler holds two busy loops at 20 % of a CPU."""
    window = limit_window(vm_run, "cfs", "service", 0.2)
    # NOTE: under TCG the CFS bandwidth timer overshoots (0.201 and 0.467 CPU seen in two
    # runs), so the bound stays below the catch-all check's 0.6 minimum instead of near 0.2.
    assert 0.05 < window["used_cpus"] <= 0.55, window


@pytest.mark.parametrize(("limit_cpus", "minimum_cpus"), [(0.2, 0.6), (1.0, 1.2)])
def test_catch_all_ignores_cpu_max(vm_run: VmRun, limit_cpus: float, minimum_cpus: float) -> None:
    """scx_layered ignores cpu.max: two busy loops of a capped cgroup in the catch-all layer
    use more than the quota (up to both CPUs)."""
    window = limit_window(vm_run, "scx", "service", limit_cpus)
    assert window["used_cpus"] > minimum_cpus, window


def test_limited_layer_holds_cpu_limit(vm_run: VmRun) -> None:
    """The normal-limited layer (Confined, one CPU) holds a 1-CPU pod near its limit."""
    window = limit_window(vm_run, "scx", "capped", 1.0)
    assert 0.6 <= window["used_cpus"] <= 1.15, window
    assert (window["layer_tasks"] or {}).get("normal-limited", 0) >= 2, window


def test_limited_layer_bounds_in_whole_cpus(vm_run: VmRun) -> None:
    """A 200m pod is bounded at one whole CPU, the layer's granularity, not at 20 %."""
    window = limit_window(vm_run, "scx", "capped-low", 0.2)
    assert window["used_cpus"] <= 1.15, window
    assert (window["layer_tasks"] or {}).get("low-limited", 0) >= 2, window
    # A failure here means scx_layered now enforces cpu.max: update docs/architecture.md.
    assert window["used_cpus"] > 0.5, window


# -- adoption, safe mode, restart, stop -------------------------------------------------------


def test_second_agent_adopts_scheduler(vm_run: VmRun) -> None:
    adopt = step(vm_run, "adopt")
    assert adopt["attached_after_kill"]
    assert adopt["ready"]
    assert adopt["reconciled"]
    assert len(adopt["pids_before"]) == 1
    assert adopt["pids_after"] == adopt["pids_before"]
    assert adopt["state_file_pid"] == adopt["pids_before"][0]
    assert adopt["enable_seq_after"] == adopt["enable_seq_before"]
    assert adopt["attached_after"]
    assert adopt["config_unchanged"]
    assert adopt["adoption_logged"]
    assert adopt["annotation"] == "scx_layered"


def test_node_safe_mode_stops_scheduler(vm_run: VmRun) -> None:
    safe_mode = step(vm_run, "safe_mode")
    assert safe_mode["node_stopped"]
    assert safe_mode["node_stop_seconds"] <= SAFE_MODE_STOP_SECONDS
    assert safe_mode["node_annotation_seconds"] is not None
    assert safe_mode["pids_in_safe_mode"] == []


def test_namespace_safe_mode_keeps_it_stopped(vm_run: VmRun) -> None:
    safe_mode = step(vm_run, "safe_mode")
    assert safe_mode["reconciled_after_lift"]
    assert safe_mode["state_with_namespace"] == "disabled"
    assert safe_mode["annotation_with_namespace"] == "safe-mode"


def test_lifted_safe_mode_resumes(vm_run: VmRun) -> None:
    safe_mode = step(vm_run, "safe_mode")
    assert safe_mode["resumed"]
    assert safe_mode["resume_annotation_seconds"] is not None
    # Safe mode is a deliberate stop: neither a restart nor a blackout.
    assert safe_mode["restarts_metric"] == 0
    assert safe_mode["blackout_seconds_metric"] == 0


def test_config_change_restarts_once(vm_run: VmRun) -> None:
    change = step(vm_run, "config_change")
    assert change["restarts_reported"]
    assert change["restarts_metric"] == 1
    assert change["enable_seq_after"] == change["enable_seq_before"] + 1
    assert len(change["pids_after"]) == 1
    assert change["pids_after"] != change["pids_before"]
    assert change["layer_prefixes"]["critical"] == change["new_pod_prefixes"]
    assert change["annotation"] == "scx_layered"


def test_config_change_blackout_reported(vm_run: VmRun) -> None:
    """The agent's blackout metric matches the time the kernel ran without layered."""
    change = step(vm_run, "config_change")
    seen = change["observed_blackout_seconds"]
    reported = change["blackout_metric"]
    assert seen is not None and seen > 0
    assert reported is not None and reported > 0
    assert abs(reported - seen) <= max(3.0, 0.25 * seen), (reported, seen)


def test_critical_pods_in_critical_layer(vm_run: VmRun) -> None:
    """A Burstable and a Guaranteed critical pod both land in the critical layer."""
    change = step(vm_run, "config_change")
    counts = change["layer_tasks"]
    assert counts is not None, "no stats from scx_layered"
    assert counts["critical"] == 2, counts
    assert change["pods"]["db"]["qos"] == "Guaranteed"
    assert change["pods"]["api"]["qos"] == "Burstable"
    assert change["layer_task_metrics"].get("critical") == 2, change["layer_task_metrics"]


def test_agent_sigterm_stops_scheduler(vm_run: VmRun) -> None:
    stop = step(vm_run, "stop")
    assert stop["exit_code"] == 0
    assert stop["state_after"] == "disabled"
    assert stop["pids_after"] == []
    assert stop["annotation"] == "stock"


def test_kubelet_values_intact_at_end(vm_run: VmRun) -> None:
    before = step(vm_run, "setup")["values_before"]
    assert step(vm_run, "restored")["values"] == before
