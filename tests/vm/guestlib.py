"""Helpers of the guest checks: sysfs, scx_layered processes, kubelet-style cgroups, procfs.

Everything here runs inside the sched_ext VM as root, with the standard library only. The VM
runs under QEMU's emulator (TCG) on a shared machine, so durations here are not
representative of real hardware and the timeouts are generous.
"""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHED_EXT = Path("/sys/kernel/sched_ext")
CGROUP_ROOT = Path("/sys/fs/cgroup")
STATS_SOCKET = Path("/var/run/scx/root/stats")

# Seconds. Loading and verifying scx_layered's BPF programs took 15 to 80 s under emulation,
# and more than 180 s while other work loaded the machine.
ATTACH_TIMEOUT_SECONDS = 300.0
DETACH_TIMEOUT_SECONDS = 60.0
PLACEMENT_TIMEOUT_SECONDS = 60.0
LOG_TAIL_LINES = 60
# A FIFO that nobody writes: idle tasks wait on it with a timeout (``start_in_cgroup``).
SLEEPER_FIFO = Path("/tmp/temper-vm-sleepers.fifo")

Observed = dict[str, Any]

# A latency-sensitive loop: wake every 2 ms and spin for 0.1 ms, for argv[1] seconds. It
# prints "ready" once the interpreter runs, so that start-up stays out of the measurement.
LATENCY_LOOP = """
import sys, time
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    time.sleep(0.002)
    spin = time.perf_counter() + 0.0001
    while time.perf_counter() < spin:
        pass
"""


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


def sched_ext_enable_seq() -> int | None:
    """How many times a sched_ext scheduler was enabled since boot."""
    value = read_text(SCHED_EXT / "enable_seq")
    return int(value) if value is not None else None


def layered_attached() -> bool:
    """True while the kernel reports layered as the enabled root scheduler."""
    return sched_ext_state() == "enabled" and (sched_ext_ops() or "").startswith("layered")


def wait_for(predicate: Callable[[], bool], timeout_seconds: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text[-lines:])


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


def scx_layered_pids() -> list[int]:
    """Pids of every running scx_layered process, found by their command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if argv0.endswith(b"/scx_layered") or argv0 == b"scx_layered":
            pids.append(int(entry.name))
    return sorted(pids)


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

    def wait_attached(self, timeout_seconds: float = ATTACH_TIMEOUT_SECONDS) -> Observed:
        """Wait until the kernel reports layered as the enabled root scheduler."""

        def attached_or_exited() -> bool:
            return self.process.poll() is not None or layered_attached()

        wait_for(attached_or_exited, timeout_seconds)
        exit_code = self.process.poll()
        return {
            "attached": exit_code is None and layered_attached(),
            "ops": sched_ext_ops(),
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


def enable_cpu_controller(relative: str) -> None:
    """Create a cgroup and enable ``cpu`` for its parents' children, as the kubelet does."""
    directory = CGROUP_ROOT
    for part in relative.split("/"):
        control = directory / "cgroup.subtree_control"
        if "cpu" not in (read_text(control) or "").split():
            control.write_text("+cpu")
        directory = directory / part
        directory.mkdir(exist_ok=True)


def remove_cgroup(relative: str, levels: int) -> None:
    """Remove the cgroup and its parents up to ``levels`` directories, deepest first."""
    directory = CGROUP_ROOT / relative
    for _ in range(levels):
        for _attempt in range(50):
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # the killed processes are still leaving the cgroup
        directory = directory.parent


def start_in_cgroup(relative: str) -> subprocess.Popen[bytes]:
    """Start a mostly idle task in the cgroup that wakes once a second, like a service.

    scx_layered 1.1.2 assigns a task that existed at attach time to a layer only when it
    next becomes runnable (``ops.runnable``), so a task that never wakes would stay out of
    every layer's count. The shell moves itself into the cgroup, then waits on a FIFO that
    nobody writes, with a timeout of one second.
    """
    if not SLEEPER_FIFO.exists():
        os.mkfifo(SLEEPER_FIFO)
    script = 'echo 0 > "$1/cgroup.procs" && exec 3<>"$2" && while :; do read -t 1 -u 3 _; done'
    return subprocess.Popen(
        ["bash", "-c", script, "bash", str(CGROUP_ROOT / relative), str(SLEEPER_FIFO)]
    )


def start_hogs(relative: str, count: int, cpu: int | None = None) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` CPU-bound shell loops, each moving itself into the cgroup first.

    Each shell waits for a short ``sleep`` after the move, like a container runtime's init
    that joins the cgroup before it executes the workload. scx_layered 1.1.2 re-matches a
    migrated task only when it next becomes runnable (``ops.runnable``), so a loop that moved
    while running would keep its old layer. With ``cpu`` the loops run on that CPU only.
    """
    script = 'echo 0 > "$1/cgroup.procs" && sleep 0.1 && exec sh -c "while :; do :; done"'
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return [
        subprocess.Popen([*pin, "sh", "-c", script, "sh", str(CGROUP_ROOT / relative)])
        for _ in range(count)
    ]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def cgroup_usage_usec(relative: str) -> int:
    """CPU time used by the cgroup's tasks, ``usage_usec`` of its ``cpu.stat``."""
    for line in (CGROUP_ROOT / relative / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise ValueError(f"no usage_usec in {CGROUP_ROOT / relative / 'cpu.stat'}")


def cgroup_cpus_used(relative: str, seconds: float) -> float:
    """CPUs the cgroup's tasks used over the next ``seconds`` (1.0 = one whole CPU)."""
    used_before, started = cgroup_usage_usec(relative), time.monotonic()
    time.sleep(seconds)
    used_after, ended = cgroup_usage_usec(relative), time.monotonic()
    return round((used_after - used_before) / ((ended - started) * 1e6), 3)


def schedstat(pid: int) -> tuple[int, int]:
    """(run-queue delay in ns, number of timeslices) from ``/proc/<pid>/schedstat``."""
    fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(fields[1]), int(fields[2])


def start_latency_loop(relative: str, cpu: int | None = None) -> subprocess.Popen[bytes]:
    """Start the latency loop in the cgroup and return once its interpreter runs.

    With ``cpu`` the loop runs on that CPU only. It runs for an hour: kill it when done.
    """
    script = 'echo 0 > "$1/cgroup.procs" && shift && exec "$@"'
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    command = [*pin, "sh", "-c", script, "sh", str(CGROUP_ROOT / relative)]
    loop = [sys.executable, "-S", "-c", LATENCY_LOOP, "3600"]
    process = subprocess.Popen([*command, *loop], stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError("the latency loop did not start")
    return process


def mean_runq_delay_us(pid: int, seconds: float) -> float:
    """Mean run-queue delay per timeslice of a task over the next ``seconds``."""
    delay_start, slices_start = schedstat(pid)
    time.sleep(seconds)
    delay_end, slices_end = schedstat(pid)
    slices = max(1, slices_end - slices_start)
    return round((delay_end - delay_start) / slices / 1000, 1)


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


def wait_for_layer_counts(expected: dict[str, int]) -> dict[str, int] | None:
    """Poll the stats socket until every layer in ``expected`` counts at least that many tasks.

    Returns the last counts read (None when the socket never replied).
    """
    last: dict[str, int] | None = None

    def reached() -> bool:
        nonlocal last
        last = layer_task_counts()
        return last is not None and all(last.get(k, 0) >= n for k, n in expected.items())

    wait_for(reached, PLACEMENT_TIMEOUT_SECONDS)
    return last


def kubelet_pod_cgroup(uid: str, qos: str) -> str:
    """The pod cgroup the kubelet creates with the systemd driver, relative to the root.

    Written out here instead of imported from the agent, so the checks compare the agent's
    paths against an independent statement of the kubelet's layout.
    """
    escaped = uid.replace("-", "_")
    if qos == "Guaranteed":
        return f"kubepods.slice/kubepods-pod{escaped}.slice"
    level = {"Burstable": "burstable", "BestEffort": "besteffort"}[qos]
    return f"kubepods.slice/kubepods-{level}.slice/kubepods-{level}-pod{escaped}.slice"


def kubelet_container_cgroup(pod_cgroup: str, index: int) -> str:
    """A containerd container's scope below the pod cgroup, with a made-up 64-hex id."""
    return f"{pod_cgroup}/cri-containerd-{index:064x}.scope"


def cpu_weight_for_request(millicores: int) -> int:
    """The ``cpu.weight`` the kubelet gives a CPU request (runc's cpu.shares conversion)."""
    shares = max(2, millicores * 1024 // 1000)
    return 1 + ((shares - 2) * 9999) // 262142
