"""Checks that run inside the sched_ext virtual machine, started by ``tests/vm/rig.py``.

The guest runs this file as root with the host's Python (the host filesystem is the guest's
root over 9p) and only the standard library. It reads a plan (JSON) that names the checks and
their arguments, runs them one after another and rewrites the results file after each check,
so a crash or a timeout still leaves the results gathered so far.

Each check records what it observed (sysfs states, exit codes, layer task counts) and the
tests on the host assert on those observations. The VM runs under QEMU's emulator (TCG) on
a shared machine, so durations here are not representative of real hardware: the checks test
behaviour, never latency, and their timeouts are generous.

Usage: ``python guest.py PLAN.json RESULTS.json``
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHED_EXT = Path("/sys/kernel/sched_ext")
CGROUP_ROOT = Path("/sys/fs/cgroup")
STATS_SOCKET = Path("/var/run/scx/root/stats")

# Seconds; loading and verifying scx_layered's BPF programs is slow under emulation.
ATTACH_TIMEOUT_SECONDS = 180.0
DETACH_TIMEOUT_SECONDS = 60.0
PLACEMENT_TIMEOUT_SECONDS = 60.0
LOG_TAIL_LINES = 60

Observed = dict[str, Any]


def read_text(path: Path) -> str | None:
    """Return the stripped content of a sysfs or proc file, or None when it is missing."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def sched_ext_state() -> str | None:
    return read_text(SCHED_EXT / "state")


def sched_ext_ops() -> str | None:
    """Name of the attached root scheduler; the ``root`` directory exists only while attached."""
    return read_text(SCHED_EXT / "root" / "ops")


def wait_for(predicate: Callable[[], bool], timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of proc(5), and fields[0] here is field 3 (state).
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def on_sched_ext(pid: int) -> bool | None:
    """Whether the task runs in the sched_ext class (``ext.enabled`` in ``/proc/<pid>/sched``)."""
    text = read_text(Path(f"/proc/{pid}/sched"))
    if text is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "ext.enabled":
            return value.strip() == "1"
    return None


class Scheduler:
    """One scx_layered process started with a config file, its output in a log file."""

    def __init__(self, binary: str, config: str, log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The previous check's scheduler may still be detaching, and a second one cannot attach.
        wait_for(lambda: sched_ext_state() == "disabled", DETACH_TIMEOUT_SECONDS)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"f:{config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                # tracing-subscriber writes no colour codes into the log with NO_COLOR set.
                env=dict(os.environ, NO_COLOR="1"),
            )
        self.started = time.monotonic()

    def wait_attached(self) -> Observed:
        """Wait until the kernel reports layered as the enabled root scheduler."""

        def attached_or_exited() -> bool:
            if self.process.poll() is not None:
                return True
            ops = sched_ext_ops() or ""
            return sched_ext_state() == "enabled" and ops.startswith("layered")

        wait_for(attached_or_exited, ATTACH_TIMEOUT_SECONDS)
        exit_code = self.process.poll()
        ops = sched_ext_ops()
        attached = (
            exit_code is None
            and sched_ext_state() == "enabled"
            and (ops or "").startswith("layered")
        )
        return {
            "attached": attached,
            "ops": ops,
            "attach_seconds": round(time.monotonic() - self.started, 1),
            "exit_code_before_attach": exit_code,
        }

    def stop(self, signum: int) -> Observed:
        """Send ``signum``, wait for the process to exit and for sched_ext to be disabled."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            exit_code: int | None = self.process.wait(DETACH_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            exit_code = None
        wait_for(lambda: sched_ext_state() == "disabled", DETACH_TIMEOUT_SECONDS)
        return {"exit_code": exit_code, "state_after": sched_ext_state()}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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


def enable_cpu_controller(relative: str) -> None:
    """Create a cgroup and enable ``cpu`` for its parents' children, as the kubelet does."""
    directory = CGROUP_ROOT
    for part in relative.split("/"):
        control = directory / "cgroup.subtree_control"
        if "cpu" not in (read_text(control) or "").split():
            control.write_text("+cpu")
        directory = directory / part
        directory.mkdir(exist_ok=True)


def start_in_cgroup(relative: str) -> subprocess.Popen[bytes]:
    """Start a sleeping task that moves itself into the cgroup before it executes ``sleep``."""
    script = 'echo 0 > "$1/cgroup.procs" && exec sleep 3600'
    return subprocess.Popen(["sh", "-c", script, "sh", str(CGROUP_ROOT / relative)])


def layer_task_counts() -> dict[str, int] | None:
    """Current task count of every layer, from scx_layered's stats socket (or None)."""
    request = json.dumps({"req": "stats", "args": {"target": "top"}}) + "\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(10.0)
            connection.connect(str(STATS_SOCKET))
            connection.sendall(request.encode())
            reply = connection.makefile("rb").readline()
    except OSError:
        return None
    message = json.loads(reply)
    if message.get("errno") != 0:
        return None
    layers = message["args"]["resp"]["layers"]
    return {name: int(layer["tasks"]) for name, layer in layers.items()}


def check_tiers(plan: dict[str, Any], args: dict[str, Any]) -> Observed:
    """Start tasks in kubelet-style pod cgroups and read their layers' task counts.

    ``args["tasks"]`` lists ``{"cgroup": <path below /sys/fs/cgroup>, "layer": <name>}``.
    Every task sits in a cgroup that only this check creates, so each non-catch-all layer
    must count exactly the tasks started for it.
    """
    expected: dict[str, int] = {}
    for task in args["tasks"]:
        expected[task["layer"]] = expected.get(task["layer"], 0) + 1
        enable_cpu_controller(task["cgroup"])
    scheduler = Scheduler(plan["scx_layered"], args["config"], Path(args["log"]))
    tasks: list[subprocess.Popen[bytes]] = []
    observed: Observed = {}
    try:
        observed = scheduler.wait_attached()
        observed["layer_tasks"] = None
        if observed["attached"]:
            tasks = [start_in_cgroup(task["cgroup"]) for task in args["tasks"]]
            last: dict[str, int] | None = None

            def counts_reached() -> bool:
                nonlocal last
                last = layer_task_counts()
                return last is not None and all(
                    last.get(layer, 0) >= count for layer, count in expected.items()
                )

            wait_for(counts_reached, PLACEMENT_TIMEOUT_SECONDS)
            observed["layer_tasks"] = last
        observed |= scheduler.stop(signal.SIGTERM)
    finally:
        scheduler.kill()
        for task in tasks:
            task.kill()
            task.wait()
    observed["log"] = log_tail(scheduler.log_path)
    return observed


CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Observed]] = {
    "kernel": check_kernel,
    "attach": check_attach,
    "sigkill": check_sigkill,
    "tiers": check_tiers,
}


def write_results(path: Path, results: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=2))
    partial.replace(path)


def install_kernel_config(config: Path) -> None:
    """Make the kernel's config visible at ``/boot/config-<release>`` as an installed kernel has.

    libbpf reads the running kernel's Kconfig there (or in ``/proc/config.gz``, which Debian
    kernels do not build) to resolve the ``__kconfig`` externs of scx_layered's BPF programs.
    Without it the BPF load fails with EINVAL. The guest mounts the host's ``/boot`` read-only,
    so a tmpfs covers it inside the guest only.
    """
    boot = Path("/boot")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(boot)], check=True)
    (boot / f"config-{os.uname().release}").write_bytes(config.read_bytes())


def main(plan_path: str, results_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    output = Path(results_path)
    install_kernel_config(Path(plan["kernel_config"]))
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
