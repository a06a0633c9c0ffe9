"""Boot the sched_ext virtual machines of a test session and run batches of guest checks.

``scripts/vm-rig.sh`` prepares the rig in ``$TEMPER_CACHE_DIR/vm`` (default
``~/.cache/temper/vm``): a Debian kernel built with ``CONFIG_SCHED_CLASS_EXT``, scx_layered
built from crates.io, and virtme-ng (``vng``) in the project's virtualenv. ``rig.json`` there
names the paths.

``run_checks`` writes a plan and a launcher script per group of checks, boots the kernel once
per group with ``vng`` under QEMU's emulator (TCG), all groups side by side, and shares each
group's work directory with its guest read-write over 9p. KVM is not used because QEMU 7.2
on the build machines aborts with "failed to set MSR 0x10a" or a KVM internal error when it
runs nested. The guest runs ``tests/vm/guest.py``
with the host's Python, because the host filesystem is the guest's root, and writes the
results as JSON into the work directory. It has QEMU's user-mode network, in which the
address 10.0.2.2 reaches the host's loopback interface: guest checks use a kube-apiserver
that the tests started on 127.0.0.1, which stays unreachable from outside the host. vng
cannot return the guest's output on these machines (no udev, so no virtio-serial script
ports), which is why results travel through a file.

Only one test session's VMs run at a time on a machine: ``run_checks`` takes an exclusive
lock on ``vm.lock`` in the rig directory first. More emulated VMs than cores slow each
scx_layered attach from about 30 s to several minutes, and a session boots two VMs, one per
core of the 2-core build machines.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_MODULE = "tests.vm.guest"
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
            vng=_local_vng() or Path(data["vng"]),
        )
        paths = (rig.kernel_image, rig.kernel_config, rig.scx_layered, rig.vng)
        return rig if all(path.exists() for path in paths) else None


def _local_vng() -> Path | None:
    """Return the vng of the running virtualenv, or None when it has none.

    Every checkout on the machine shares ``rig.json``, whose ``vng`` belongs to the checkout
    that prepared the rig last and may since have been deleted.
    """
    candidate = Path(sys.executable).parent / "vng"
    return candidate if candidate.exists() else None


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
class VmBoot:
    """One VM of a run; ``boot_seconds`` is None when the guest never started."""

    name: str
    boot_seconds: float | None
    vm_seconds: float
    # CPU time of vng and QEMU. QEMU's emulation runs on one thread, so this is about the
    # time the VM would run on an otherwise idle core.
    cpu_seconds: float
    workdir: Path


@dataclass(frozen=True)
class VmRun:
    """Results of every check of a run's VMs, by check name, and how the VMs went."""

    checks: dict[str, CheckResult]
    lock_wait_seconds: float
    boots: list[VmBoot]
    wall_seconds: float
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
        "repo": str(REPO_ROOT),
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
        f"cd {REPO_ROOT}\n"
        f"exec {sys.executable} -m {GUEST_MODULE} {plan_path} {workdir}/results.json"
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


def boot(
    rig: Rig, launcher: Path, workdir: Path, timeout_seconds: float
) -> tuple[str, float, float]:
    """Run the launcher in a fresh VM; return how vng ended (a note for error messages), the
    seconds it ran and the CPU seconds that vng and QEMU used."""
    started = time.monotonic()
    note, cpu_seconds = _run_vng(rig, launcher, workdir, timeout_seconds)
    return note, round(time.monotonic() - started, 1), cpu_seconds


def _run_vng(rig: Rig, launcher: Path, workdir: Path, timeout_seconds: float) -> tuple[str, float]:
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
        # QEMU's user-mode network: the guest reaches the host's loopback interface, where
        # the test's kube-apiserver listens, at 10.0.2.2. The guest configures its address
        # itself (guest.py's network check), so vng's DHCP client stays off.
        "--network",
        "user",
        "--no-dhcp",
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
        # wait4 instead of Popen.wait: it also returns the CPU time of vng and QEMU.
        deadline = time.monotonic() + timeout_seconds
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                os.killpg(process.pid, signal.SIGKILL)
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.5)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu_seconds = round(usage.ru_utime + usage.ru_stime, 1)
        if pid:
            return f"vng exited with code {process.returncode}", cpu_seconds
        return f"vng timed out after {timeout_seconds:.0f} s and was killed", cpu_seconds


def run_checks(
    rig: Rig,
    groups: dict[str, list[Check]],
    workdir: Path,
    timeout_seconds: float,
    lock_timeout_seconds: float = 900.0,
) -> VmRun:
    """Boot one VM per group of checks, all at once, and return the results of every check.

    Each group's checks run in order in its own VM, with ``workdir/<group>`` as its work
    directory. Single-threaded TCG runs a VM on one host core, so VMs booted side by side
    finish sooner on a machine with more cores. ``timeout_seconds`` limits each VM run,
    ``lock_timeout_seconds`` the wait for another session's VMs to finish. Raises VmError
    with the guest's logs when a VM does not boot, a guest program fails or times out, or a
    check is missing from the results.
    """
    prepared = {}
    for name, checks in groups.items():
        directory = workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "results.json").unlink(missing_ok=True)
        prepared[name] = (checks, directory, write_guest_files(rig, checks, directory))

    waited = time.monotonic()
    lock = acquire_vm_lock(rig, lock_timeout_seconds)
    lock_wait_seconds = time.monotonic() - waited
    started = time.time()
    try:
        with ThreadPoolExecutor(max_workers=len(prepared)) as pool:
            futures = {
                name: pool.submit(boot, rig, launcher, directory, timeout_seconds)
                for name, (_, directory, launcher) in prepared.items()
            }
            outcomes = {name: future.result() for name, future in futures.items()}
    finally:
        os.close(lock)

    parsed: dict[str, CheckResult] = {}
    boots = []
    for name, (checks, directory, _) in prepared.items():
        exit_note, vm_seconds, cpu_seconds = outcomes[name]
        boot_seconds = _boot_seconds(directory, started)
        boots.append(VmBoot(name, boot_seconds, vm_seconds, cpu_seconds, directory))
        parsed |= _parse_results(checks, directory, f"VM {name}: {exit_note}")
    return VmRun(
        checks=parsed,
        lock_wait_seconds=round(lock_wait_seconds, 1),
        boots=boots,
        wall_seconds=round(time.time() - started, 1),
        workdir=workdir,
    )


def _boot_seconds(directory: Path, started: float) -> float | None:
    """Seconds from the start of the run until the guest's userspace ran the launcher."""
    booted_file = directory / "booted"
    if not booted_file.exists():
        return None
    return round(float(booted_file.read_text()) - started, 1)


def _parse_results(checks: list[Check], directory: Path, exit_note: str) -> dict[str, CheckResult]:
    """Read one VM's results; raise VmError with its logs when any check is missing."""
    results_path = directory / "results.json"

    def failure(reason: str) -> VmError:
        return VmError(
            f"{reason} ({exit_note}; logs in {directory})\n"
            f"--- guest.log (tail) ---\n{tail(directory / 'guest.log')}\n"
            f"--- console.log (tail) ---\n{tail(directory / 'console.log')}"
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
    return parsed
