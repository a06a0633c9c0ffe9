"""Run the benchmark inside the sched_ext VM that ``scripts/vm-rig.sh`` prepares.

The host builds the native tools, writes a launcher into the output directory, which the
guest mounts read-write over 9p, and boots the rig's kernel with virtme-ng (``vng``) under
QEMU's emulator, as ``tests/vm/rig.py`` does for the VM tests. The guest runs this package
with ``--inside-vm`` and writes its results into that directory. Latencies measured under
emulation are only comparable between arms of the same VM run, never with the host.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from bench.colocation.processes import BenchmarkError
from tests.vm.rig import (
    RIG_SCRIPT,
    VM_CPUS,
    VM_MEMORY,
    Rig,
    VmError,
    acquire_vm_lock,
    cache_dir,
    tail,
)

REPOSITORY = Path(__file__).resolve().parents[2]
# How long to wait for a VM test session that holds the machine-wide VM lock.
VM_LOCK_TIMEOUT_SECONDS = 1800.0


def install_kernel_config(config: Path) -> None:
    """Make the kernel's config readable at ``/boot/config-<release>``, inside the guest only.

    libbpf reads the running kernel's config there (Debian kernels have no
    ``/proc/config.gz``) to resolve the ``__kconfig`` externs of scx_layered's BPF programs,
    and without it the load fails with EINVAL. The guest mounts the host's ``/boot`` read-only,
    so a tmpfs covers it first.
    """
    boot = Path("/boot")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(boot)], check=True)
    (boot / f"config-{os.uname().release}").write_bytes(config.read_bytes())


# Console lines of a guest kernel that crashed.
_CRASH_MARKERS = ("Kernel panic - not syncing", "Oops: ", "BUG: kernel NULL pointer")


def guest_crashed(console_log: Path) -> bool:
    """Tell whether the guest's console shows a kernel crash."""
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in _CRASH_MARKERS)


def load_rig() -> Rig:
    """Load the prepared rig, or raise a BenchmarkError that names the script preparing it."""
    rig = Rig.load(cache_dir())
    if rig is None:
        raise BenchmarkError(f"the sched_ext VM rig in {cache_dir()} is missing: run {RIG_SCRIPT}")
    return rig


def run_in_vm(
    rig: Rig,
    output_dir: Path,
    native_dir: Path,
    guest_arguments: list[str],
    timeout: float,
    *,
    tcg_threads: str = "multi",
) -> Path:
    """Boot the VM, run the benchmark in it and return the guest's output directory.

    ``tcg_threads`` is QEMU's ``-accel tcg,thread=`` value. With ``single`` both vCPUs take
    turns on one host thread, and a busy vCPU halves the other's speed. With ``multi`` each
    vCPU has its own host thread.
    """
    guest_dir = output_dir / "guest"
    guest_dir.mkdir(parents=True, exist_ok=True)
    guest_log = output_dir / "guest.log"
    console_log = output_dir / "console.log"
    command = [
        sys.executable, "-m", "bench.colocation", "--inside-vm",
        "--kernel-config", str(rig.kernel_config),
        "--scx-layered-path", str(rig.scx_layered),
        "--native-dir", str(native_dir),
        "--output-dir", str(guest_dir),
        *guest_arguments,
    ]  # fmt: skip
    launcher = output_dir / "guest.sh"
    launcher.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(REPOSITORY))}\n"
        "ip link set lo up 2>/dev/null || true\n"
        f"exec {shlex.join(command)} > {shlex.quote(str(guest_log))} 2>&1\n"
    )
    launcher.chmod(0o755)
    vng = [
        str(rig.vng),
        "--verbose",
        "--disable-kvm",
        "--force-9p",
        "--cpus", str(VM_CPUS),
        "--memory", VM_MEMORY,
        # Single-threaded TCG hides the isolation this benchmark measures (docs/colocation.md),
        # so multi is the default here, although its guest kernel crashes at times.
        f"--qemu-opts=-accel tcg,thread={tcg_threads}",
        f"--rwdir={output_dir}",
        "--run", str(rig.kernel_image),
        "--exec", str(launcher),
    ]  # fmt: skip
    env = dict(os.environ, PATH=f"{rig.vng.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # One VM at a time on this machine, because the VM tests take the same lock.
    try:
        lock = acquire_vm_lock(rig, VM_LOCK_TIMEOUT_SECONDS)
    except VmError as error:
        raise BenchmarkError(str(error)) from error
    try:
        _boot(vng, env, output_dir, guest_log, timeout)
    finally:
        os.close(lock)
    if not (guest_dir / "results.json").exists():
        partial = guest_dir / "cells.jsonl"
        keep = (
            f"the cells finished before the failure are in {partial}: "
            f"--render {partial} prints them\n"
            if partial.exists()
            else ""
        )
        raise BenchmarkError(
            f"the guest wrote no results (logs in {output_dir})\n{keep}"
            f"--- guest.log (tail) ---\n{tail(guest_log)}\n"
            f"--- console.log (tail) ---\n{tail(console_log)}"
        )
    return guest_dir


def _boot(
    vng: list[str], env: dict[str, str], output_dir: Path, guest_log: Path, timeout: float
) -> None:
    """Run vng until the guest powers off, and kill what is left of it on any exit."""
    console_log = output_dir / "console.log"
    with console_log.open("wb") as console:
        # Its own process group: vng starts virtme-run, which starts QEMU, and all three must
        # go when the benchmark stops early.
        process = subprocess.Popen(
            vng,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise BenchmarkError(
                f"the VM run timed out after {timeout:.0f} s (logs in {output_dir})\n"
                f"--- guest.log (tail) ---\n{tail(guest_log)}"
            ) from error
        finally:
            # Also after a normal exit: nothing of the group may outlive the run.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
