"""A FAKE sysfs root that says sched_ext and BTF are present, for host tests."""

from pathlib import Path

FAKE_SCX_LAYERED = Path(__file__).with_name("fake_scx_layered")


def make_fake_sysfs(root: Path, cpus: int = 4, threads_per_core: int = 1) -> Path:
    """Lay out the files the agent reads: sched_ext state, BTF and CPU topology."""
    (root / "kernel/sched_ext").mkdir(parents=True)
    (root / "kernel/sched_ext/state").write_text("disabled\n")
    (root / "kernel/btf").mkdir(parents=True)
    (root / "kernel/btf/vmlinux").write_bytes(b"")
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text(f"0-{cpus - 1}\n")
    for cpu in range(cpus):
        core = cpu // threads_per_core
        siblings = range(core * threads_per_core, (core + 1) * threads_per_core)
        topology = cpu_dir / f"cpu{cpu}/topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(",".join(map(str, siblings)) + "\n")
    return root


def make_fake_cgroup2_root(root: Path) -> Path:
    """A directory that looks like a cgroup v2 mount (it has cgroup.controllers)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return root


def make_fake_kernel_config(boot_dir: Path, release: str) -> Path:
    """A FAKE ``/boot/config-<release>``: the agent only checks that the file is readable."""
    boot_dir.mkdir(parents=True, exist_ok=True)
    config = boot_dir / f"config-{release}"
    config.write_text("CONFIG_SCHED_CLASS_EXT=y\nCONFIG_DEBUG_INFO_BTF=y\n")
    return config
