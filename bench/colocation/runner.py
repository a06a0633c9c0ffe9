"""The measured cells: memcached under open-loop load beside a number of batch fillers.

``Testbed`` sets the node up once (native tools, pod cgroups, memcached with its keys) and
runs cells. A cell creates the filler pods' cgroups, lets the arm act on the pods, starts
the fillers and then the load generator, reads the fillers' iteration counters and the CPU
times at the start and end of the measurement window (after the warm-up), and undoes it all.
"""

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.cgroups import CgroupLayout
from agent.podinfo import PodInfo, QosClass
from bench.colocation.arms import Arm
from bench.colocation.cgroupfs import KubepodsTree, PodCgroup, PodSpec, throttled_periods
from bench.colocation.memcached import preload, start_memcached
from bench.colocation.processes import (
    BenchmarkError,
    CpuTimes,
    NativeTools,
    ProcessSet,
    TaskTimes,
    build_native_tools,
    process_cpu_seconds,
    process_run_delay_ns,
    summed_task_times,
)
from temper.controlplane.process import free_port
from temper.tiers import Tier

log = logging.getLogger(__name__)

# Slack for the load generator's start and drain before its result counts as lost.
LOADGEN_GRACE_SECONDS = 30.0
# The load generator schedules its first request this long after it connected.
LOADGEN_LEAD_SECONDS = 0.01

NanosecondArray = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Workload:
    """Request mix of the load generator and CPU sizes of the pods."""

    connections: int = 8
    keys: int = 10_000
    value_bytes: int = 100
    set_permille: int = 100
    memcached_threads: int = 2
    memcached_cpu_millicores: int = 1000
    loadgen_cpu_millicores: int = 1000
    # Guaranteed: request = limit, pod under kubepods/. Burstable: request only, no quota,
    # pod under kubepods/burstable/ beside the fillers.
    critical_qos: QosClass = QosClass.GUARANTEED
    filler_request_millicores: int = 500


@dataclass(frozen=True)
class Window:
    """Durations of one cell, in seconds."""

    warmup_seconds: float
    measure_seconds: float
    drain_seconds: float = 2.0


@dataclass
class CellResult:
    """Measurements of one cell, with its latency arrays kept in memory for pooling."""

    arm: str
    fillers: int
    repetition: int
    rate: float
    loadgen: dict[str, Any]
    achieved_rate: float
    filler_iterations_per_second: float
    memcached_cores: float | None
    loadgen_cores: float | None
    machine_busy_fraction: float
    memcached_throttled_periods: int | None
    arm_facts: dict[str, Any]
    started_unix: float
    # How late the harness read the counters at the later of the two window edges, in ms.
    window_edge_late_ms: float
    filler_cgroups: list[str]
    # CPU time of the fillers over the window and how often the kernel preempted them (None
    # without fillers, or when a filler was gone at a window edge).
    filler_cores: float | None
    filler_preemptions_per_second: float | None
    # Run-queue delay summed over the threads of memcached and of the load generator, in
    # milliseconds per second of the window.
    memcached_run_delay_ms_per_second: float | None
    loadgen_run_delay_ms_per_second: float | None
    latency_ns: NanosecondArray = field(repr=False)
    service_ns: NanosecondArray = field(repr=False)
    lateness_ns: NanosecondArray = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts of the cell, with its own percentiles in microseconds."""
        return {
            "arm": self.arm,
            "fillers": self.fillers,
            "repetition": self.repetition,
            "rate": self.rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "latency_us": percentiles_us(self.latency_ns),
            "service_us": percentiles_us(self.service_ns),
            "lateness_us": percentiles_us(self.lateness_ns),
            "filler_iterations_per_second": round(self.filler_iterations_per_second),
            "memcached_cores": _rounded(self.memcached_cores),
            "loadgen_cores": _rounded(self.loadgen_cores),
            "filler_cores": _rounded(self.filler_cores),
            "filler_preemptions_per_second": _rounded(self.filler_preemptions_per_second),
            "memcached_run_delay_ms_per_second": _rounded(self.memcached_run_delay_ms_per_second),
            "loadgen_run_delay_ms_per_second": _rounded(self.loadgen_run_delay_ms_per_second),
            "machine_busy_fraction": round(self.machine_busy_fraction, 3),
            "memcached_throttled_periods": self.memcached_throttled_periods,
            "loadgen": self.loadgen,
            "arm_facts": self.arm_facts,
            "window_edge_late_ms": round(self.window_edge_late_ms, 1),
            "filler_cgroups": self.filler_cgroups,
            "started_unix": round(self.started_unix, 1),
        }


# Per finished cell: one line of cells.jsonl with its summary, and its latency arrays.
CELLS_FILE = "cells.jsonl"
ARRAYS_DIR = "cell-arrays"
_ARRAY_NAMES = ("latency_ns", "service_ns", "lateness_ns")


def _arrays_path(directory: Path, arm: str, fillers: int, repetition: int) -> Path:
    return directory / ARRAYS_DIR / f"{arm}-{fillers}-{repetition}.npz"


def save_cell(directory: Path, cell: CellResult) -> None:
    """Keep a finished cell in ``directory``: its arrays first, then its summary line."""
    arrays = _arrays_path(directory, cell.arm, cell.fillers, cell.repetition)
    arrays.parent.mkdir(parents=True, exist_ok=True)
    np.savez(arrays, **{name: getattr(cell, name) for name in _ARRAY_NAMES})
    with (directory / CELLS_FILE).open("a") as cells:
        cells.write(json.dumps(cell.summary()) + "\n")


def load_cells(directory: Path) -> list[CellResult]:
    """Load the cells ``save_cell`` kept in ``directory`` (an earlier boot of the same run)."""
    path = directory / CELLS_FILE
    if not path.exists():
        return []
    cells = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        saved = json.loads(line)
        arrays_path = _arrays_path(directory, saved["arm"], saved["fillers"], saved["repetition"])
        with np.load(arrays_path) as arrays:
            latency, service, lateness = (arrays[name] for name in _ARRAY_NAMES)
        cells.append(
            CellResult(
                arm=saved["arm"],
                fillers=saved["fillers"],
                repetition=saved["repetition"],
                rate=saved["rate"],
                loadgen=saved["loadgen"],
                achieved_rate=saved["achieved_rate"],
                filler_iterations_per_second=saved["filler_iterations_per_second"],
                memcached_cores=saved["memcached_cores"],
                loadgen_cores=saved["loadgen_cores"],
                machine_busy_fraction=saved["machine_busy_fraction"],
                memcached_throttled_periods=saved["memcached_throttled_periods"],
                arm_facts=saved["arm_facts"],
                started_unix=saved["started_unix"],
                window_edge_late_ms=saved["window_edge_late_ms"],
                filler_cgroups=saved["filler_cgroups"],
                # Cells saved before these were measured load without them.
                filler_cores=saved.get("filler_cores"),
                filler_preemptions_per_second=saved.get("filler_preemptions_per_second"),
                memcached_run_delay_ms_per_second=saved.get("memcached_run_delay_ms_per_second"),
                loadgen_run_delay_ms_per_second=saved.get("loadgen_run_delay_ms_per_second"),
                latency_ns=latency,
                service_ns=service,
                lateness_ns=lateness,
            )
        )
    return cells


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentiles_us(values_ns: NanosecondArray) -> dict[str, float | None]:
    """p50, p99 and p99.9 in microseconds (None for an empty array)."""
    if values_ns.size == 0:
        return {"p50": None, "p99": None, "p99.9": None}
    points = np.percentile(values_ns, [50, 99, 99.9]) / 1000.0
    return {"p50": round(float(points[0]), 1), "p99": round(float(points[1]), 1),
            "p99.9": round(float(points[2]), 1)}  # fmt: skip


@dataclass
class _Snapshot:
    counters: list[int]
    memcached_cpu: float | None
    loadgen_cpu: float | None
    memcached_run_delay_ns: int | None
    loadgen_run_delay_ns: int | None
    filler_times: TaskTimes | None
    cpu: CpuTimes
    throttled: int | None
    at: float


class Testbed:
    """memcached and the load generator's pod on the node, and the cells run beside them."""

    def __init__(
        self, layout: CgroupLayout, node_cpus: int, work_dir: Path, workload: Workload
    ) -> None:
        self.layout = layout
        self.work_dir = work_dir
        self.workload = workload
        self.processes = ProcessSet()
        self.tree = KubepodsTree(layout, node_cpus)
        self.tools: NativeTools | None = None
        self.memcached: subprocess.Popen[bytes] | None = None
        self.memcached_pod: PodCgroup | None = None
        self.loadgen_pod: PodCgroup | None = None
        self.port = 0
        self.cells = 0

    def start(self, native_dir: Path | None = None) -> None:
        """Build the tools, add the critical pods and start memcached with its keys.

        ``native_dir``, when given, contains tools built earlier (the VM run builds them on the
        host).
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if native_dir is not None:
            self.tools = NativeTools(native_dir / "loadgen", native_dir / "filler")
        else:
            self.tools = build_native_tools(self.work_dir / "native")
        w = self.workload
        guaranteed = w.critical_qos is QosClass.GUARANTEED
        memcached_spec = PodSpec(
            "memcached",
            Tier.CRITICAL,
            w.critical_qos,
            w.memcached_cpu_millicores,
            w.memcached_cpu_millicores if guaranteed else None,
        )
        loadgen_spec = PodSpec(
            "loadgen",
            Tier.CRITICAL,
            w.critical_qos,
            w.loadgen_cpu_millicores,
            w.loadgen_cpu_millicores if guaranteed else None,
        )
        self.memcached_pod = self.tree.add_pod(memcached_spec)
        self.loadgen_pod = self.tree.add_pod(loadgen_spec)
        self.port = free_port()
        self.memcached = start_memcached(
            self.processes,
            self.memcached_pod.procs,
            self.port,
            w.memcached_threads,
            self.work_dir / "memcached.log",
        )
        preload(self.port, w.keys, w.value_bytes)
        log.info(
            "memcached ready",
            extra={"port": self.port, "pid": self.memcached.pid, "threads": w.memcached_threads},
        )

    def describe(self) -> dict[str, Any]:
        """Return the critical pods' cgroups and memcached's PID and port, for the record."""
        return {
            "memcached_pid": None if self.memcached is None else self.memcached.pid,
            "memcached_port": self.port,
            "memcached_cgroup": None if self.memcached_pod is None else str(self.memcached_pod.pod),
            "loadgen_cgroup": None if self.loadgen_pod is None else str(self.loadgen_pod.pod),
        }

    def close(self) -> None:
        """Stop every process and remove every cgroup this testbed created."""
        self.processes.stop_all()
        self.tree.cleanup()

    # -- cells ----------------------------------------------------------------------------

    def _snapshot(self, counter_file: Path, filler_pids: list[int], loadgen_pid: int) -> _Snapshot:
        raw = counter_file.read_bytes()
        counters = [
            int.from_bytes(raw[i * 8 : i * 8 + 8], "little") for i in range(len(filler_pids))
        ]
        assert self.memcached is not None and self.memcached_pod is not None
        return _Snapshot(
            counters=counters,
            memcached_cpu=process_cpu_seconds(self.memcached.pid),
            loadgen_cpu=process_cpu_seconds(loadgen_pid),
            memcached_run_delay_ns=process_run_delay_ns(self.memcached.pid),
            loadgen_run_delay_ns=process_run_delay_ns(loadgen_pid),
            filler_times=summed_task_times(filler_pids) if filler_pids else None,
            cpu=CpuTimes.read(),
            throttled=throttled_periods(self.memcached_pod.container, self.layout.version),
            at=time.monotonic(),
        )

    def run_cell(
        self, arm: Arm, fillers: int, repetition: int, rate: float, window: Window
    ) -> CellResult:
        """Measure memcached at ``rate`` beside ``fillers`` batch pods under ``arm``."""
        if self.tools is None or self.memcached_pod is None or self.loadgen_pod is None:
            raise BenchmarkError("the testbed was not started")
        self.cells += 1
        cell = self.cells
        specs = [
            PodSpec(
                f"filler-{cell}-{index}",
                Tier.BACKGROUND,
                QosClass.BURSTABLE,
                self.workload.filler_request_millicores,
            )
            for index in range(fillers)
        ]
        filler_pods: list[PodCgroup] = []
        try:
            for spec in specs:
                filler_pods.append(self.tree.add_pod(spec))
            pods = [self.memcached_pod.spec, self.loadgen_pod.spec, *specs]
            return self._measure(
                arm,
                filler_pods,
                [p.pod_info() for p in pods],
                cell=cell,
                repetition=repetition,
                rate=rate,
                window=window,
            )
        finally:
            for pod in filler_pods:
                self.tree.remove_pod(pod)

    def _measure(
        self,
        arm: Arm,
        filler_pods: list[PodCgroup],
        pods: list[PodInfo],
        *,
        cell: int,
        repetition: int,
        rate: float,
        window: Window,
    ) -> CellResult:
        assert self.tools is not None and self.loadgen_pod is not None
        fillers = len(filler_pods)
        counter_file = self.work_dir / f"cell-{cell}.counters"
        counter_file.write_bytes(bytes(8 * max(1, fillers)))
        prefix = self.work_dir / f"cell-{cell}"
        started_unix = time.time()
        facts = arm.engage(pods)
        filler_processes: list[subprocess.Popen[bytes]] = []
        loadgen: subprocess.Popen[bytes] | None = None
        try:
            for index, pod in enumerate(filler_pods):
                command = [str(self.tools.filler), str(counter_file), str(index)]
                filler_processes.append(self.processes.start(command, pod.procs))
            loadgen = self.processes.start(
                self._loadgen_command(prefix, rate, window, seed=cell),
                self.loadgen_pod.procs,
                stdout=subprocess.PIPE,
            )
            launched = time.monotonic()
            window_start = launched + LOADGEN_LEAD_SECONDS + window.warmup_seconds
            time.sleep(window_start - time.monotonic())
            filler_pids = [process.pid for process in filler_processes]
            first = self._snapshot(counter_file, filler_pids, loadgen.pid)
            window_end = window_start + window.measure_seconds
            time.sleep(max(0.0, window_end - time.monotonic()))
            last = self._snapshot(counter_file, filler_pids, loadgen.pid)
            timeout = window.drain_seconds + LOADGEN_GRACE_SECONDS
            try:
                output, _ = loadgen.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as error:
                raise BenchmarkError(
                    f"the load generator did not finish within {timeout:.0f} s of the window"
                ) from error
            if loadgen.returncode != 0:
                raise BenchmarkError(f"the load generator failed with code {loadgen.returncode}")
            self.processes.stop(loadgen)
        finally:
            for process in filler_processes:
                self.processes.stop(process)
            if loadgen is not None:
                self.processes.stop(loadgen)
            arm.release()
            counter_file.unlink(missing_ok=True)
        summary = json.loads(output)
        arrays = {name: _read_array(prefix, name) for name in ("latency", "service", "lateness")}
        elapsed = last.at - first.at
        iterations = sum(b - a for a, b in zip(first.counters, last.counters, strict=True))
        filler_cores = filler_preemptions = None
        if first.filler_times is not None and last.filler_times is not None:
            before, after = first.filler_times, last.filler_times
            filler_cores = _per_second(before.cpu_ns, after.cpu_ns, elapsed, scale=1e-9)
            filler_preemptions = _per_second(before.preemptions, after.preemptions, elapsed)
        throttled = (
            last.throttled - first.throttled
            if last.throttled is not None and first.throttled is not None
            else None
        )
        return CellResult(
            arm=arm.name,
            fillers=fillers,
            repetition=repetition,
            rate=rate,
            loadgen=summary,
            achieved_rate=summary["completed_measured"] / window.measure_seconds,
            filler_iterations_per_second=iterations / elapsed if fillers else 0.0,
            memcached_cores=_per_second(first.memcached_cpu, last.memcached_cpu, elapsed),
            loadgen_cores=_per_second(first.loadgen_cpu, last.loadgen_cpu, elapsed),
            machine_busy_fraction=last.cpu.busy_fraction_since(first.cpu),
            memcached_throttled_periods=throttled,
            arm_facts=facts,
            started_unix=started_unix,
            window_edge_late_ms=1000 * max(first.at - window_start, last.at - window_end),
            filler_cgroups=[str(pod.pod) for pod in filler_pods],
            filler_cores=filler_cores,
            filler_preemptions_per_second=filler_preemptions,
            memcached_run_delay_ms_per_second=_per_second(
                first.memcached_run_delay_ns, last.memcached_run_delay_ns, elapsed, scale=1e-6
            ),
            loadgen_run_delay_ms_per_second=_per_second(
                first.loadgen_run_delay_ns, last.loadgen_run_delay_ns, elapsed, scale=1e-6
            ),
            latency_ns=arrays["latency"],
            service_ns=arrays["service"],
            lateness_ns=arrays["lateness"],
        )

    def _loadgen_command(self, prefix: Path, rate: float, window: Window, seed: int) -> list[str]:
        assert self.tools is not None
        w = self.workload
        return [
            str(self.tools.loadgen),
            "-p", str(self.port),
            "-r", f"{rate:.1f}",
            "-c", str(w.connections),
            "-w", str(window.warmup_seconds),
            "-d", str(window.measure_seconds),
            "-D", str(window.drain_seconds),
            "-k", str(w.keys),
            "-v", str(w.value_bytes),
            "-s", str(w.set_permille),
            "-S", str(seed),
            "-o", str(prefix),
        ]  # fmt: skip


def _per_second(
    first: float | None, last: float | None, elapsed: float, *, scale: float = 1.0
) -> float | None:
    """Return how much a counter grew per second, times ``scale`` (1e-6 turns ns into ms)."""
    if first is None or last is None or elapsed <= 0:
        return None
    return (last - first) * scale / elapsed


def _read_array(prefix: Path, name: str) -> NanosecondArray:
    path = Path(f"{prefix}.{name}")
    try:
        values: NanosecondArray = np.fromfile(path, dtype=np.uint64)
    finally:
        path.unlink(missing_ok=True)
    return values
