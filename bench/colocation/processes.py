"""Processes of the benchmark: native tools built at start, started inside pod cgroups.

Every process is started through ``/bin/sh``, which writes its own PID into the cgroup's
``cgroup.procs`` and then executes the program, so the program never runs outside its
cgroup, not even for its first instructions.
"""

import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NATIVE_DIR = Path(__file__).resolve().parent / "native"
ENTER_CGROUP = 'echo $$ > "$1" && shift && exec "$@"'
STOP_TIMEOUT_SECONDS = 10.0


class BenchmarkError(Exception):
    """The benchmark cannot run or a part of it failed."""


@dataclass(frozen=True)
class NativeTools:
    """Paths of the load generator and the filler built from ``native/``."""

    loadgen: Path
    filler: Path


def build_native_tools(directory: Path) -> NativeTools:
    """Compile ``loadgen.c`` and ``filler.c`` with the system C compiler into ``directory``."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise BenchmarkError("no C compiler found (gcc or cc): install it with apt-get install gcc")
    directory.mkdir(parents=True, exist_ok=True)
    tools = NativeTools(loadgen=directory / "loadgen", filler=directory / "filler")
    builds = [
        (tools.loadgen, NATIVE_DIR / "loadgen.c", ["-lm"]),
        (tools.filler, NATIVE_DIR / "filler.c", []),
    ]
    for output, source, libraries in builds:
        command = [compiler, "-O2", "-Wall", "-o", str(output), str(source), *libraries]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise BenchmarkError(
                f"building {source.name} failed ({' '.join(command)}):\n{completed.stderr}"
            )
    return tools


class ProcessSet:
    """Processes started by the benchmark, which ``stop_all`` kills and reaps."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: list[str],
        procs_file: Path,
        *,
        stdout: int | None = subprocess.DEVNULL,
        log_path: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` inside the cgroup whose ``cgroup.procs`` is ``procs_file``."""
        wrapped = ["/bin/sh", "-c", ENTER_CGROUP, "sh", str(procs_file), *command]
        if log_path is not None:
            with log_path.open("ab") as output:
                process = subprocess.Popen(
                    wrapped, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
                )
        else:
            process = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=stdout)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal one process and reap it."""
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        """Kill and reap every process still running."""
        for process in list(self.processes):
            if process.poll() is None:
                process.kill()
        for process in list(self.processes):
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("a benchmark process did not exit", extra={"pid": process.pid})
        self.processes.clear()


def raise_harness_priority() -> bool:
    """Run this process under SCHED_FIFO (priority 1), with children reset to the normal policy.

    The harness reads the counters at the edges of each measurement window, and a harness that
    waits behind the fillers for its turn would read them late. It sleeps between the two
    reads, so the real-time policy takes almost no CPU from the node. Returns False when the
    kernel refuses (no CAP_SYS_NICE, or no real-time runtime in the cgroup).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except OSError as error:
        log.warning(
            "cannot give the harness the SCHED_FIFO policy, so window edges may be read late",
            extra={"error": str(error)},
        )
        return False
    return True


def restore_harness_priority() -> None:
    """Put this process back under the normal policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as error:
        log.warning("cannot restore the normal policy", extra={"error": str(error)})


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process and all its threads, from ``/proc/<pid>/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class TaskTimes:
    """CPU time and preemptions of a single-threaded process, from the scheduler's counters."""

    cpu_ns: int
    # Involuntary context switches: each one a preemption.
    preemptions: int

    @classmethod
    def read(cls, pid: int) -> "TaskTimes | None":
        """Read ``/proc/<pid>/schedstat`` and ``status``. Return None when the process is gone."""
        try:
            schedstat = Path(f"/proc/{pid}/schedstat").read_text().split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                preemptions = int(line.split()[1])
                break
        else:
            return None
        return cls(int(schedstat[0]), preemptions)


def process_run_delay_ns(pid: int) -> int | None:
    """Return the run-queue delay of all threads of a process so far, in ns (schedstat field 2)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while listed
    return total


def summed_task_times(pids: list[int]) -> TaskTimes | None:
    """Sum the counters of single-threaded processes. Return None if any of them is gone."""
    times = [TaskTimes.read(pid) for pid in pids]
    present = [t for t in times if t is not None]
    if len(present) != len(times):
        return None
    return TaskTimes(sum(t.cpu_ns for t in present), sum(t.preemptions for t in present))


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate CPU time of the machine from the ``cpu`` line of ``/proc/stat``, in ticks."""

    busy: int
    total: int

    @classmethod
    def read(cls) -> "CpuTimes":
        """Read the current counters."""
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is part of user).
        idle = fields[3] + fields[4]
        total = sum(fields[:8])
        return cls(busy=total - idle, total=total)

    def busy_fraction_since(self, earlier: "CpuTimes") -> float:
        """Share of all CPUs' time that was busy between ``earlier`` and this reading."""
        elapsed = self.total - earlier.total
        return (self.busy - earlier.busy) / elapsed if elapsed > 0 else 0.0
