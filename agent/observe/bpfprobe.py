"""The agent's side of the BPF programs in ``bpf/sched_observe.bpf.c``.

:func:`load_probe` runs :mod:`agent.observe.bpfload` in a child process (BCC stays out of the
agent's memory) and receives the descriptors of the maps, programs and attachments. Arrays are
``BPF_F_MMAPABLE`` and used through ``mmap``: tracking a thread, reading its counters and
folding histograms cost no system call.
"""

import asyncio
import json
import logging
import mmap
import os
import socket
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.observe.bpfload import MAP_NAMES

log = logging.getLogger(__name__)

BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "sched_observe.bpf.c"

DELAY_SLOTS = 128
U32 = struct.Struct("<I")
THREAD_STATS = struct.Struct("<9QIIII")
# Byte offsets of fields in a thread_stats entry.
THREAD_TASK_RUNTIME_OFFSET = 40
THREAD_TASK_RUN_DELAY_OFFSET = 48
THREAD_GROUP_OFFSET = 76
THREAD_TIER_OFFSET = 80
# The flags bit of a thread that is on a CPU.
THREAD_ON_CPU = 1
DELAY_HIST = struct.Struct(f"<{DELAY_SLOTS + 2}Q")
CPU_STATE = struct.Struct("<IIQ")
U64 = struct.Struct("<Q")
S64 = struct.Struct("<q")
COUNTERS = struct.Struct("<9Q")

# Indexes of the counters array (see the C source).
SMT_COLLISIONS, SMT_COLLISION_NS = 0, 1
PROTECTED_FALLBACKS, PROTECTED_FALLBACK_NS = 2, 3
OPEN_RESERVES, OPEN_RESERVE_NS = 4, 5
MEMBERSHIP_CHANGES = 8

PID_MAX_FILE = Path("/proc/sys/kernel/pid_max")


class BpfUnavailableError(Exception):
    """The BPF programs could not be compiled, loaded or attached; the reason is the message."""


@dataclass(frozen=True)
class ProbeConfig:
    """Sizes compiled into the programs."""

    pid_max: int
    max_threads: int
    max_groups: int
    max_cpus: int
    open_reserve_grace_ns: int
    btf_path: Path


def possible_cpus() -> int:
    """Return the number of possible CPUs (highest index + 1), the size of per-CPU arrays."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return int(text.rsplit("-", 1)[-1].rsplit(",", 1)[-1]) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def pid_max() -> int:
    """Return the kernel's pid_max, one more than the highest thread id it hands out."""
    try:
        return int(PID_MAX_FILE.read_text())
    except (OSError, ValueError):
        return 4_194_304  # the largest value the kernel allows on 64-bit machines


def _fdinfo(fd: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


class _MappedArray:
    """An mmap-ed BPF array map."""

    def __init__(self, name: str, fd: int, value_size: int) -> None:
        info = _fdinfo(fd)
        if int(info["value_size"]) != value_size:
            raise BpfUnavailableError(
                f"BPF map {name} has values of {info['value_size']} bytes, expected {value_size}: "
                "bpf/sched_observe.bpf.c and agent/observe/bpfprobe.py disagree"
            )
        self.entries = int(info["max_entries"])
        self.stride = (value_size + 7) // 8 * 8
        length = -(-self.stride * self.entries // mmap.PAGESIZE) * mmap.PAGESIZE
        self.mmap = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mmap)

    def zero(self, index: int) -> None:
        start = index * self.stride
        self.view[start : start + self.stride] = bytes(self.stride)

    def close(self) -> None:
        self.view.release()
        self.mmap.close()


class BpfProbe:
    """Attached programs and their maps, owned by the agent process."""

    def __init__(
        self,
        config: ProbeConfig,
        maps: Mapping[str, int],
        attachments: list[int],
        programs: Mapping[str, int],
    ) -> None:
        self.config = config
        self._fds = [*maps.values(), *attachments, *programs.values()]
        self._programs = dict(programs)
        self.tid_slot = _MappedArray("tid_slot", maps["tid_slot"], U32.size)
        self.thread_stats = _MappedArray("thread_stats", maps["thread_stats"], THREAD_STATS.size)
        self.group_hist = _MappedArray("group_hist", maps["group_hist"], DELAY_HIST.size)
        self.group_cpu_ns = _MappedArray("group_cpu_ns", maps["group_cpu_ns"], U64.size)
        self.cpu_state = _MappedArray("cpu_state", maps["cpu_state"], CPU_STATE.size)
        self.cpu_sibling = _MappedArray("cpu_sibling", maps["cpu_sibling"], S64.size)
        self.cpu_protected = _MappedArray("cpu_protected", maps["cpu_protected"], U64.size)
        self.counters = _MappedArray("counters", maps["counters"], U64.size)

    # -- the tracked threads --------------------------------------------------------------

    def track(
        self, tid: int, slot: int, group: int, tier_code: int, *, runtime_ns: int, run_delay_ns: int
    ) -> bool:
        """Start counting ``tid`` into ``slot``; False when the tid is beyond pid_max.

        ``runtime_ns`` and ``run_delay_ns`` are the thread's schedstat values now: the program
        counts the differences to them.
        """
        if not 0 < tid < self.tid_slot.entries:
            return False
        stats = self.thread_stats
        stats.zero(slot)
        offset = slot * stats.stride
        U64.pack_into(stats.view, offset + THREAD_TASK_RUNTIME_OFFSET, runtime_ns)
        U64.pack_into(stats.view, offset + THREAD_TASK_RUN_DELAY_OFFSET, run_delay_ns)
        U32.pack_into(stats.view, offset + THREAD_GROUP_OFFSET, group)
        U32.pack_into(stats.view, offset + THREAD_TIER_OFFSET, tier_code)
        U32.pack_into(self.tid_slot.view, tid * self.tid_slot.stride, slot + 1)
        return True

    def untrack(self, tid: int) -> None:
        """Stop counting ``tid``."""
        if 0 < tid < self.tid_slot.entries:
            U32.pack_into(self.tid_slot.view, tid * self.tid_slot.stride, 0)

    # -- reads ----------------------------------------------------------------------------

    def read_thread(self, slot: int) -> tuple[int, ...]:
        """(runtime_ns, run_delay_ns, timeslices, voluntary, involuntary, task_runtime_ns,
        task_run_delay_ns, last_in_ns, batch_out_at_in_ns, last_cpu, group, tier, flags) of a
        slot. runtime_ns, run_delay_ns and timeslices count from tracking; voluntary and
        involuntary are the task's own totals at its last switch-out (0 before the first)."""
        return THREAD_STATS.unpack_from(self.thread_stats.view, slot * self.thread_stats.stride)

    def read_hist(self, group: int) -> tuple[int, ...]:
        """Return a group's delay histogram: DELAY_SLOTS counts, then sum_ns and count."""
        return DELAY_HIST.unpack_from(self.group_hist.view, group * self.group_hist.stride)

    def read_hist_count(self, group: int) -> int:
        """Return the number of delays in a group's histogram (its last field)."""
        offset = group * self.group_hist.stride + DELAY_HIST.size - 8
        count: int = U64.unpack_from(self.group_hist.view, offset)[0]
        return count

    def reset_group(self, group: int) -> None:
        """Zero a group's histogram and placement row before the group index is reused."""
        self.group_hist.zero(group)
        for cpu in range(self.config.max_cpus):
            self.group_cpu_ns.zero(group * self.config.max_cpus + cpu)

    def read_placement(self, group: int) -> list[int]:
        """Nanoseconds the group's threads ran on each CPU."""
        start = group * self.config.max_cpus
        return [
            U64.unpack_from(self.group_cpu_ns.view, (start + cpu) * 8)[0]
            for cpu in range(self.config.max_cpus)
        ]

    def read_counters(self) -> tuple[int, ...]:
        """Return the linter counters (see the index constants)."""
        return COUNTERS.unpack_from(self.counters.view, 0)

    def membership_changes(self) -> int:
        """Return how often the thread set of the tracked cgroups may have changed."""
        changes: int = U64.unpack_from(self.counters.view, MEMBERSHIP_CHANGES * 8)[0]
        return changes

    def cpu_tiers(self) -> list[int]:
        """Tier code of the tracked thread on each CPU right now (0: none)."""
        return [
            CPU_STATE.unpack_from(self.cpu_state.view, cpu * 16)[0]
            for cpu in range(self.config.max_cpus)
        ]

    def set_siblings(self, siblings: Mapping[int, int]) -> None:
        """Write each CPU's SMT sibling (-1 for none)."""
        for cpu in range(self.config.max_cpus):
            S64.pack_into(self.cpu_sibling.view, cpu * 8, siblings.get(cpu, -1))

    def set_protected(self, cpus: Iterable[int]) -> None:
        """Mark the CPUs of the protected critical layer."""
        chosen = set(cpus)
        for cpu in range(self.config.max_cpus):
            U64.pack_into(self.cpu_protected.view, cpu * 8, 1 if cpu in chosen else 0)

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """Return (run_time_ns, run_cnt) of each program; zero unless kernel.bpf_stats_enabled=1."""
        stats = {}
        for name, fd in self._programs.items():
            info = _fdinfo(fd)
            stats[name] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
        return stats

    def run_stats(self) -> tuple[int, int]:
        """Return (run_time_ns, run_cnt) summed over all programs."""
        stats = self.program_stats().values()
        return sum(time for time, _ in stats), sum(count for _, count in stats)

    def close(self) -> None:
        """Detach the programs and free the maps (by closing every descriptor)."""
        for array in (
            self.tid_slot,
            self.thread_stats,
            self.group_hist,
            self.group_cpu_ns,
            self.cpu_state,
            self.cpu_sibling,
            self.cpu_protected,
            self.counters,
        ):
            array.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _loader_command(config: ProbeConfig, socket_fd: int) -> list[str]:
    defines = {
        "PID_MAX": config.pid_max,
        "MAX_THREADS": config.max_threads,
        "MAX_GROUPS": config.max_groups,
        "MAX_CPUS": config.max_cpus,
        "OPEN_RESERVE_GRACE_NS": f"{config.open_reserve_grace_ns}ULL",
    }
    command = [sys.executable, "-m", "agent.observe.bpfload"]
    command += ["--socket-fd", str(socket_fd), "--source", str(BPF_SOURCE)]
    command += ["--btf", str(config.btf_path)]
    for name, value in defines.items():
        command += ["-D", f"{name}={value}"]
    return command


async def _run_loader(config: ProbeConfig, timeout_seconds: float) -> tuple[bytes, list[int], str]:
    """Run the loader child; return its message, the descriptors it sent and its stderr."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = await asyncio.create_subprocess_exec(
            *_loader_command(config, child.fileno()),
            pass_fds=(child.fileno(),),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        child.close()
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout_seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BpfUnavailableError(
                f"compiling the BPF programs took more than {timeout_seconds:.0f} s"
            ) from None

        # The child has exited, so its message is complete in the socket buffer (or absent).
        parent.setblocking(False)
        try:
            payload, fds, _, _ = socket.recv_fds(parent, 65536, 64)
        except BlockingIOError:
            payload, fds = b"", []
    finally:
        parent.close()
        child.close()
    return payload, fds, stderr.decode(errors="replace")


async def load_probe(config: ProbeConfig, timeout_seconds: float = 120.0) -> BpfProbe:
    """Compile and attach the programs in a child process; raise BpfUnavailableError."""
    if not BPF_SOURCE.is_file():
        raise BpfUnavailableError(f"BPF source {BPF_SOURCE} is missing from the installation")
    payload, fds, stderr = await _run_loader(config, timeout_seconds)

    header: dict[str, Any] = {"ok": False, "error": "the loader sent no message"}
    if payload:
        header = json.loads(payload)
    if not header.get("ok"):
        for fd in fds:
            os.close(fd)
        detail = " | ".join(stderr.strip().splitlines()[-5:])
        raise BpfUnavailableError(f"{header.get('error')}; loader output: {detail}")

    maps = dict(zip(header["maps"], fds, strict=False))
    rest = fds[len(MAP_NAMES) :]
    attached = len(header["tracepoints"])
    attachments = rest[:attached]
    programs = dict(zip(header["programs"], rest[attached:], strict=False))
    try:
        return BpfProbe(config, maps, attachments, programs)
    except (BpfUnavailableError, OSError, KeyError) as error:
        for fd in fds:
            os.close(fd)
        raise BpfUnavailableError(f"cannot map the BPF programs' maps: {error}") from error
