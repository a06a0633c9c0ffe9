"""CPU topology and sched_ext support, read from sysfs (a fake root works in tests)."""

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Topology:
    """CPUs of the node as scx_layered sizes layers on them."""

    cpus: int
    threads_per_core: int = 1
    llcs: int = 1

    @property
    def cores(self) -> int:
        """Physical cores (CPUs divided by SMT width)."""
        return max(1, self.cpus // self.threads_per_core)


def parse_cpu_list(text: str) -> list[int]:
    """Parse a kernel CPU list such as ``0-3,8,10-11``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            first, last = part.split("-", 1)
            cpus.extend(range(int(first), int(last) + 1))
        else:
            cpus.append(int(part))
    return cpus


def read_topology(sysfs_root: Path) -> Topology:
    """Read online CPUs, SMT siblings and last-level caches; fall back to os.cpu_count()."""
    cpu_dir = sysfs_root / "devices/system/cpu"
    try:
        online = parse_cpu_list((cpu_dir / "online").read_text())
    except (OSError, ValueError):
        return Topology(cpus=os.cpu_count() or 1)
    siblings: set[tuple[int, ...]] = set()
    llcs: set[str] = set()
    for cpu in online:
        topology = cpu_dir / f"cpu{cpu}/topology/thread_siblings_list"
        try:
            siblings.add(tuple(parse_cpu_list(topology.read_text())))
        except (OSError, ValueError):
            siblings.add((cpu,))
        cache_dir = cpu_dir / f"cpu{cpu}/cache"
        shared = _last_level_cache(cache_dir)
        if shared is not None:
            llcs.add(shared)
    threads = max((len(group) for group in siblings), default=1)
    return Topology(cpus=len(online), threads_per_core=threads, llcs=max(1, len(llcs)))


def _last_level_cache(cache_dir: Path) -> str | None:
    best: tuple[int, str] | None = None
    try:
        indexes = [p for p in cache_dir.iterdir() if re.fullmatch(r"index\d+", p.name)]
    except OSError:
        return None
    for index in indexes:
        try:
            level = int((index / "level").read_text())
            shared = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if best is None or level > best[0]:
            best = (level, shared)
    return best[1] if best else None


@dataclass(frozen=True)
class SchedExtSupport:
    """Whether this kernel can run a sched_ext scheduler, and why not when it cannot."""

    supported: bool
    reason: str
    state: str | None = None
    ops: str | None = None
    kernel_config: Path | None = None


def find_kernel_config(release: str, boot_dir: Path, procfs_root: Path) -> Path | None:
    """Return the kernel config file libbpf would read, or None when neither is readable.

    libbpf resolves the ``__kconfig`` externs of BPF programs (scx_layered has them) from
    ``/boot/config-<release>`` and else from ``/proc/config.gz``, and fails the load when
    neither can be read.
    """
    for candidate in (boot_dir / f"config-{release}", procfs_root / "config.gz"):
        try:
            with candidate.open("rb") as config:
                config.read(1)
        except OSError:
            continue
        return candidate
    return None


def detect_sched_ext(
    sysfs_root: Path,
    kernel_release: str | None = None,
    *,
    boot_dir: Path = Path("/boot"),
    procfs_root: Path = Path("/proc"),
) -> SchedExtSupport:
    """Check ``kernel/sched_ext/state``, BTF, the kernel version (6.12+) and the kernel config."""
    release = kernel_release or os.uname().release
    state_file = sysfs_root / "kernel/sched_ext/state"
    if not state_file.exists():
        return SchedExtSupport(
            False,
            f"kernel {release} has no sched_ext ({state_file} missing; needs "
            "CONFIG_SCHED_CLASS_EXT=y, Linux 6.12 or newer)",
        )
    if not (sysfs_root / "kernel/btf/vmlinux").exists():
        return SchedExtSupport(
            False, f"kernel {release} has no BTF (CONFIG_DEBUG_INFO_BTF=y is required)"
        )
    match = re.match(r"(\d+)\.(\d+)", release)
    if match and (int(match.group(1)), int(match.group(2))) < (6, 12):
        return SchedExtSupport(False, f"kernel {release} is older than 6.12")
    kernel_config = find_kernel_config(release, boot_dir, procfs_root)
    if kernel_config is None:
        return SchedExtSupport(
            False,
            f"kernel {release} has no readable kernel config (neither {boot_dir}/config-{release} "
            f"nor {procfs_root}/config.gz can be read), which scx_layered needs to load its BPF "
            "programs; install the kernel's config file in /boot (in a pod, mount the host's "
            "/boot read-only) or build the kernel with CONFIG_IKCONFIG_PROC=y",
        )
    state = _read(state_file)
    ops = _read(sysfs_root / "kernel/sched_ext/root/ops")
    return SchedExtSupport(
        True, "sched_ext available", state=state, ops=ops, kernel_config=kernel_config
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
