"""Boot the sched_ext virtual machine once and run a batch of guest checks in it.

``scripts/vm-rig.sh`` prepares the rig in ``$TEMPER_CACHE_DIR/vm`` (default
``~/.cache/temper/vm``): a Debian kernel built with ``CONFIG_SCHED_CLASS_EXT``, scx_layered
built from crates.io, and virtme-ng (``vng``) in the project's virtualenv. ``rig.json`` there
names the paths.

``run_checks`` writes a plan and a launcher script to a work directory, boots the kernel with
``vng`` under QEMU's emulator (TCG) and shares the work directory with the guest read-write
over 9p. KVM is not used because QEMU 7.2 on the build machines aborts with "failed to set
MSR 0x10a" or a KVM internal error when it runs nested. The guest runs ``tests/vm/guest.py``
with the host's Python, because the host filesystem is the guest's root, and writes the
results as JSON into the work directory. vng cannot return the guest's output on these
machines (no udev, so no virtio-serial script ports), which is why results travel through a
file.

Only one VM runs at a time on a machine: ``run_checks`` takes an exclusive lock on
``vm.lock`` in the rig directory first, because several emulated VMs on two cores slow
each scx_layered attach from about 30 s to several minutes.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GUEST_PROGRAM = Path(__file__).resolve().parent / "guest.py"
RIG_SCRIPT = "scripts/vm-rig.sh"
VM_CPUS = 2
VM_MEMORY = "2G"
LOG_TAIL_LINES = 80


class VmError(Exception):
    """The VM did not boot, or the guest did not finish its checks."""


def cache_dir() -> Path:
    """``$TEMPER_CACHE_DIR/vm``, or ``~/.cache/temper/vm``."""
    configured = os.environ.get("TEMPER_CACHE_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "temper"
    return root / "vm"


@dataclass(frozen=True)
class Rig:
    """Paths that ``scripts/vm-rig.sh`` recorded in ``rig.json``."""

    directory: Path
    kernel_image: Path
    kernel_config: Path
    kernel_version: str
    scx_layered: Path
    vng: Path

    @classmethod
    def load(cls, directory: Path) -> "Rig | None":
        """Read ``rig.json``; None when the rig was not prepared or a path is gone."""
        manifest = directory / "rig.json"
        if not manifest.exists():
            return None
        data = json.loads(manifest.read_text())
        rig = cls(
            directory=directory,
            kernel_image=Path(data["kernel_image"]),
            kernel_config=Path(data["kernel_config"]),
            kernel_version=data["kernel_version"],
            scx_layered=Path(data["scx_layered"]),
            vng=Path(data["vng"]),
        )
        paths = (rig.kernel_image, rig.kernel_config, rig.scx_layered, rig.vng)
        return rig if all(path.exists() for path in paths) else None


@dataclass(frozen=True)
class Check:
    """One guest check: ``kind`` names a function in ``guest.py``, ``args`` its arguments."""

    name: str
    kind: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    """What the guest observed for one check, or the traceback of the check's error."""

    observed: dict[str, Any] | None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class VmRun:
    """Results and timings of one boot; ``boot_seconds`` is None when the guest never started."""

    checks: dict[str, CheckResult]
    lock_wait_seconds: float
    boot_seconds: float | None
    vm_seconds: float
    workdir: Path


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"({path.name} not readable: {error})"
    return "\n".join(text.splitlines()[-lines:])


def write_guest_files(rig: Rig, checks: list[Check], workdir: Path) -> Path:
    """Write the plan and the launcher script that vng executes; return the launcher."""
    plan_path = workdir / "plan.json"
    plan = {
        "scx_layered": str(rig.scx_layered),
        "kernel_config": str(rig.kernel_config),
        "checks": [{"name": c.name, "kind": c.kind, "args": c.args} for c in checks],
    }
    plan_path.write_text(json.dumps(plan, indent=2))

    # The launcher records when the guest's userspace started, which is the boot time.
    launcher = workdir / "guest.sh"
    launcher.write_text(
        "#!/bin/sh\n"
        f"date +%s.%N > {workdir}/booted\n"
        f"exec {sys.executable} {GUEST_PROGRAM} {plan_path} {workdir}/results.json"
        f" > {workdir}/guest.log 2>&1\n"
    )
    launcher.chmod(0o755)
    return launcher


def acquire_vm_lock(rig: Rig, timeout_seconds: float) -> int:
    """Wait for the machine-wide VM lock and return its file descriptor (close to release)."""
    lock_path = rig.directory / "vm.lock"
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(descriptor)
                raise VmError(
                    f"timed out after {timeout_seconds:.0f} s waiting for {lock_path}: "
                    "another test session kept its VM running"
                ) from None
            time.sleep(1.0)


def boot(rig: Rig, launcher: Path, workdir: Path, timeout_seconds: float) -> str:
    """Run the launcher in a fresh VM and return how vng ended, as a note for error messages."""
    command = [
        str(rig.vng),
        "--verbose",
        "--disable-kvm",
        "--force-9p",
        "--cpus",
        str(VM_CPUS),
        "--memory",
        VM_MEMORY,
        # Single-threaded TCG runs both vCPUs on one host thread. With one thread per vCPU
        # (QEMU 7.2's default) a guest kernel oopsed on a stale int3 in __schedule while
        # scx_layered attached, because the kernel patches static branches in code that the
        # other vCPU was executing.
        "--qemu-opts=-accel tcg,thread=single",
        f"--rwdir={workdir}",
        "--run",
        str(rig.kernel_image),
        "--exec",
        str(launcher),
    ]
    # vng starts its helper virtme-run from PATH.
    env = dict(os.environ, PATH=f"{rig.vng.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with (workdir / "console.log").open("wb") as console:
        # A session of its own lets a timeout kill QEMU together with vng.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            return f"vng exited with code {process.wait(timeout_seconds)}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"vng timed out after {timeout_seconds:.0f} s and was killed"


def run_checks(
    rig: Rig,
    checks: list[Check],
    workdir: Path,
    timeout_seconds: float,
    lock_timeout_seconds: float = 900.0,
) -> VmRun:
    """Boot the VM once, run ``checks`` in the guest in order and return their results.

    ``timeout_seconds`` limits the VM run, ``lock_timeout_seconds`` the wait for another
    session's VM to finish. Raises VmError with the guest's logs when the VM does not boot,
    the guest program fails or times out, or a check is missing from the results.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    results_path = workdir / "results.json"
    results_path.unlink(missing_ok=True)
    launcher = write_guest_files(rig, checks, workdir)

    waited = time.monotonic()
    lock = acquire_vm_lock(rig, lock_timeout_seconds)
    lock_wait_seconds = time.monotonic() - waited
    started = time.time()
    try:
        exit_note = boot(rig, launcher, workdir, timeout_seconds)
    finally:
        os.close(lock)
    vm_seconds = time.time() - started

    booted_file = workdir / "booted"
    boot_seconds = None
    if booted_file.exists():
        boot_seconds = round(float(booted_file.read_text()) - started, 1)

    def failure(reason: str) -> VmError:
        return VmError(
            f"{reason} ({exit_note}; logs in {workdir})\n"
            f"--- guest.log (tail) ---\n{tail(workdir / 'guest.log')}\n"
            f"--- console.log (tail) ---\n{tail(workdir / 'console.log')}"
        )

    if not results_path.exists():
        raise failure("the guest wrote no results: the VM did not boot or the guest failed")
    results = json.loads(results_path.read_text())
    if not results["finished"]:
        raise failure("the guest did not finish its checks")

    parsed: dict[str, CheckResult] = {}
    for check in checks:
        entry = results["checks"].get(check.name)
        if entry is None:
            raise failure(f"the results have no entry for check {check.name!r}")
        parsed[check.name] = CheckResult(
            observed=entry["observed"], error=entry["error"], seconds=entry["seconds"]
        )
    return VmRun(
        checks=parsed,
        lock_wait_seconds=round(lock_wait_seconds, 1),
        boot_seconds=boot_seconds,
        vm_seconds=round(vm_seconds, 1),
        workdir=workdir,
    )
