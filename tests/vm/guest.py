"""Checks that run inside the sched_ext virtual machine, started by ``tests/vm/rig.py``.

The guest runs this module as root with the host's Python (the host filesystem is the guest's
root over 9p), from the repository root so that the agent's modules import. It reads a plan
(JSON) that names the checks and their arguments, runs them one after another and rewrites
the results file after each check, so a crash or a timeout still leaves the results gathered
so far. The checks use the standard library, except those that run the agent's own code
(``kernel_config``, and the agent check of ``guestagent.py``).

Each check records what it observed (sysfs states, exit codes, layer task counts) and the
tests on the host assert on those observations. The VM runs under QEMU's emulator (TCG) on
a shared machine, so durations here are not representative of real hardware: the checks test
behaviour, never latency, and their timeouts are generous.

Usage: ``python -m tests.vm.guest PLAN.json RESULTS.json``
"""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.topology import detect_sched_ext
from tests.vm.guestagent import check_agent
from tests.vm.guestkube import GuestKube, KubeError
from tests.vm.guestlib import (
    CGROUP_ROOT,
    Observed,
    Scheduler,
    cpu_seconds,
    log_tail,
    on_sched_ext,
    read_text,
    sched_ext_ops,
    sched_ext_state,
)


def check_kernel(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """The kernel's sched_ext and cgroup v2 state before any scheduler runs."""
    cgroup_types = [
        fields[2]
        for fields in (line.split() for line in Path("/proc/mounts").read_text().splitlines())
        if fields[1] == str(CGROUP_ROOT)
    ]
    controllers = (read_text(CGROUP_ROOT / "cgroup.controllers") or "").split()
    return {
        "release": os.uname().release,
        "state": sched_ext_state(),
        "root_ops": sched_ext_ops(),
        "cgroup_filesystems": cgroup_types,
        "controllers": controllers,
        "btf": Path("/sys/kernel/btf/vmlinux").exists(),
        "possible_cpus": read_text(Path("/sys/devices/system/cpu/possible")),
        "online_cpus": read_text(Path("/sys/devices/system/cpu/online")),
    }


def check_attach(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """Start scx_layered with a config, wait for it to attach, then stop it with SIGTERM."""
    scheduler = Scheduler(plan["scx_layered"], args["config"], Path(args["log"]))
    try:
        observed = scheduler.wait_attached()
        observed |= scheduler.stop(signal.SIGTERM)
    finally:
        scheduler.kill()
    observed["log"] = log_tail(scheduler.log_path)
    return observed


def check_sigkill(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """SIGKILL scx_layered while a busy loop runs: sched_ext goes back to disabled, the loop runs.

    The busy loop starts before the scheduler, so it is switched into sched_ext at attach and
    back to the fair class when the kernel unregisters the killed scheduler.
    """
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    scheduler = Scheduler(plan["scx_layered"], args["config"], Path(args["log"]))
    try:
        observed = scheduler.wait_attached()
        observed["busy_on_sched_ext_while_attached"] = on_sched_ext(busy.pid)
        observed |= scheduler.stop(signal.SIGKILL)
        observed["busy_alive"] = busy.poll() is None
        before = cpu_seconds(busy.pid)
        time.sleep(2.0)
        observed["busy_cpu_seconds_in_2s"] = round(cpu_seconds(busy.pid) - before, 2)
        observed["busy_on_sched_ext_after"] = on_sched_ext(busy.pid)
    finally:
        scheduler.kill()
        busy.kill()
        busy.wait()
    observed["log"] = log_tail(scheduler.log_path)
    return observed


def check_network(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """Configure the user-mode network statically and reach the host's API server.

    vng runs with ``--no-dhcp``: QEMU's user-mode network always gives the guest 10.0.2.15
    and forwards the gateway 10.0.2.2 to the host's loopback interface.
    """
    commands = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"],
    ]
    if not Path("/sys/class/net/eth0").exists():
        commands.insert(0, ["modprobe", "virtio_net"])
    failures = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            failures.append(f"{' '.join(command)}: {result.stderr.strip()}")
    observed: Observed = {"interface_failures": failures, "version": None, "error": None}
    try:
        observed["version"] = GuestKube.load(args["kube"]).get("/version").get("gitVersion")
    except KubeError as error:
        observed["error"] = str(error)
    return observed


def check_kernel_config(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """The agent's sched_ext support check, before or after the kernel config is installed.

    ``main`` covers ``/boot`` with an empty tmpfs, and Debian kernels have no
    ``/proc/config.gz``, so the guest has no readable kernel config until ``install`` is true.
    libbpf reads the running kernel's config there to resolve the ``__kconfig`` externs of
    scx_layered's BPF programs, and without it the BPF load fails with EINVAL.
    """
    if args.get("install"):
        config = Path(f"/boot/config-{os.uname().release}")
        config.write_bytes(Path(plan["kernel_config"]).read_bytes())
    support = detect_sched_ext(Path("/sys"))
    return {
        "supported": support.supported,
        "reason": support.reason,
        "kernel_config": str(support.kernel_config) if support.kernel_config else None,
    }


def check_load_failure(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """Start scx_layered with a config it is expected to reject; record how it ended.

    ``args["timeout_seconds"]`` limits the wait for the load to fail. A scheduler that
    attaches anyway is stopped with SIGTERM.
    """
    scheduler = Scheduler(plan["scx_layered"], args["config"], Path(args["log"]))
    try:
        observed = scheduler.wait_attached(args["timeout_seconds"])
        if observed["attached"]:
            observed |= scheduler.stop(signal.SIGTERM)
        observed["state_after"] = sched_ext_state()
    finally:
        scheduler.kill()
    observed["log"] = log_tail(scheduler.log_path)
    return observed


CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Observed]] = {
    "kernel": check_kernel,
    "network": check_network,
    "kernel_config": check_kernel_config,
    "attach": check_attach,
    "sigkill": check_sigkill,
    "load_failure": check_load_failure,
    "agent": check_agent,
}


def write_results(path: Path, results: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=2))
    partial.replace(path)


def main(plan_path: str, results_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    output = Path(results_path)
    # The guest mounts the host's /boot read-only. An empty tmpfs over it, inside the guest
    # only, leaves the guest without a kernel config until a kernel_config check installs it.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/boot"], check=True)
    results: dict[str, Any] = {"finished": False, "checks": {}}
    write_results(output, results)
    for check in plan["checks"]:
        started = time.monotonic()
        entry: dict[str, Any] = {"kind": check["kind"]}
        print(f"guest: check {check['name']} started", flush=True)
        try:
            entry["observed"] = CHECKS[check["kind"]](plan, check.get("args", {}))
            entry["error"] = None
        except Exception:
            entry["observed"] = None
            entry["error"] = traceback.format_exc()
        entry["seconds"] = round(time.monotonic() - started, 1)
        print(f"guest: check {check['name']} took {entry['seconds']} s", flush=True)
        results["checks"][check["name"]] = entry
        write_results(output, results)
    results["finished"] = True
    write_results(output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
