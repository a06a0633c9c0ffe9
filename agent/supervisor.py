"""Supervision of the ``scx_layered`` process.

scx_layered has no live reload: a new config means stop and start, and the node runs the
kernel's stock scheduler in between (the blackout). The supervisor therefore

- starts ``scx_layered f:<config>`` and confirms attachment through sysfs (state ``enabled``
  and ``root/ops`` starting with ``layered``);
- restarts a crashed scheduler with exponential backoff and reports a crash loop;
- rate-limits restarts caused by config changes (``min_restart_interval_seconds``) and
  counts restarts and blackout time;
- records the running scheduler's pid and config digest in a state file, so that an agent
  that restarts adopts a healthy scheduler with an unchanged config instead of restarting it;
- stops the scheduler on request (safe mode, no Temper pods, agent shutdown).
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


@dataclass
class SupervisorStats:
    """Counters exported as metrics."""

    starts: int = 0
    restarts: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    blackout_seconds_total: float = 0.0
    last_blackout_seconds: float = 0.0
    last_error: str = ""


def config_digest(config_bytes: bytes) -> str:
    """SHA-256 of the config file content."""
    return hashlib.sha256(config_bytes).hexdigest()


def _pid_alive(pid: int, binary_name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return binary_name.encode() in cmdline


class SchedulerSupervisor:
    """Keeps at most one scx_layered running with the desired config."""

    def __init__(
        self,
        *,
        binary: str,
        config_path: Path,
        sysfs_root: Path,
        state_dir: Path,
        attach_timeout_seconds: float = 30.0,
        stop_timeout_seconds: float = 10.0,
        min_restart_interval_seconds: float = 30.0,
        max_backoff_seconds: float = 300.0,
    ) -> None:
        self.binary = binary
        self.config_path = config_path
        self.sysfs_root = sysfs_root
        self.state_file = state_dir / "scheduler.json"
        self.log_file = state_dir / "scx_layered.log"
        self.attach_timeout_seconds = attach_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self.min_restart_interval_seconds = min_restart_interval_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.stats = SupervisorStats()
        self._pid: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._digest: str | None = None
        self._started_at = 0.0
        self._next_attempt_at = 0.0
        self._stopped_at: float | None = None
        self._adopt()

    # -- state --------------------------------------------------------------------------

    @property
    def running_digest(self) -> str | None:
        """Config digest of the running scheduler, or None when none runs."""
        return self._digest if self.is_running() else None

    def instance(self) -> tuple[int | None, str]:
        """Identify the running scheduler: its pid and the kernel's count of enables.

        scx_layered re-initialises itself in the same process after CPU hotplug. The
        kernel's ``enable_seq`` (empty on kernels without it) distinguishes such restarts.
        """
        try:
            enables = (self.sysfs_root / "kernel/sched_ext/enable_seq").read_text().strip()
        except OSError:
            enables = ""
        return (self._popen.pid if self._popen is not None else self._pid), enables

    def is_running(self) -> bool:
        """True while the scheduler process lives."""
        if self._popen is not None:
            return self._popen.poll() is None
        return self._pid is not None and _pid_alive(self._pid, Path(self.binary).name)

    def attached(self) -> bool:
        """Return True when sysfs reports an enabled layered scheduler."""
        ext = self.sysfs_root / "kernel/sched_ext"
        try:
            state = (ext / "state").read_text().strip()
            ops = (ext / "root/ops").read_text().strip()
        except OSError:
            return False
        return state == "enabled" and ops.startswith("layered")

    def _adopt(self) -> None:
        try:
            state = orjson.loads(self.state_file.read_bytes())
            pid, digest = int(state["pid"]), str(state["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if _pid_alive(pid, Path(self.binary).name):
            self._pid, self._digest = pid, digest
            self._started_at = float(state.get("started", time.time()))
            log.info("adopted running scheduler", extra={"pid": pid, "digest": digest[:12]})

    def _write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        payload = {"pid": self._pid, "digest": self._digest, "started": self._started_at}
        self.state_file.write_bytes(orjson.dumps(payload))

    # -- actions ------------------------------------------------------------------------

    async def ensure(self, desired_digest: str | None) -> None:
        """Move toward the desired state: a scheduler with this config, or none (None)."""
        if desired_digest is None:
            if self.is_running() or self._pid is not None:
                await self.stop("no enforcement wanted")
            # A deliberate stop (safe mode, no Temper pods) is no blackout: the next start
            # measures none.
            self._stopped_at = None
            return
        if self.is_running() and self._digest == desired_digest:
            return
        now = time.monotonic()
        if self.is_running():
            since_start = time.time() - self._started_at
            if since_start < self.min_restart_interval_seconds:
                return  # rate limit: the caller retries on its next pass
            await self.stop("config changed")
            self.stats.restarts += 1
        elif self._digest is not None and self._stopped_at is None:
            self._record_failure("scx_layered exited unexpectedly")
            self._stopped_at = time.monotonic()
        if now < self._next_attempt_at:
            return
        await self._start(desired_digest)

    async def _start(self, digest: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [self.binary, f"f:{self.config_path}"]
        log.info("starting scheduler", extra={"command": " ".join(command), "digest": digest[:12]})
        with self.log_file.open("ab") as output:
            try:
                # Its own session: a crashing agent must not take the scheduler with it.
                self._popen = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                    command,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as error:
                self._record_failure(f"cannot run {self.binary}: {error}")
                return
        self._pid, self._digest = self._popen.pid, digest
        self._started_at = time.time()
        self.stats.starts += 1
        deadline = time.monotonic() + self.attach_timeout_seconds
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                break
            if self.attached():
                self._on_attached()
                return
            await asyncio.sleep(0.1)
        code = self._popen.poll()
        reason = (
            f"scx_layered exited with code {code} before attaching"
            if code is not None
            else f"scx_layered did not attach within {self.attach_timeout_seconds} s"
        )
        await self.stop(reason)
        self._record_failure(f"{reason}; see {self.log_file}")

    def _on_attached(self) -> None:
        if self._stopped_at is not None:
            blackout = time.monotonic() - self._stopped_at
            self.stats.last_blackout_seconds = blackout
            self.stats.blackout_seconds_total += blackout
        self._stopped_at = None
        self.stats.consecutive_failures = 0
        self._next_attempt_at = 0.0
        self._write_state()
        log.info(
            "scheduler attached",
            extra={
                "pid": self._pid,
                "blackout_seconds": round(self.stats.last_blackout_seconds, 3),
            },
        )

    def _record_failure(self, reason: str) -> None:
        self.stats.failures += 1
        self.stats.consecutive_failures += 1
        self.stats.last_error = reason
        backoff = min(self.max_backoff_seconds, 2.0 ** (self.stats.consecutive_failures - 1))
        self._next_attempt_at = time.monotonic() + backoff
        self._digest = None
        log.error(
            "scheduler failed, node runs the stock scheduler",
            extra={
                "error": reason,
                "attempt": self.stats.consecutive_failures,
                "retry_in_seconds": backoff,
            },
        )

    async def stop(self, reason: str) -> None:
        """SIGTERM the scheduler (SIGKILL after the timeout); the kernel reverts to stock."""
        pid = self._popen.pid if self._popen is not None else self._pid
        if pid is not None and self.is_running():
            log.info("stopping scheduler", extra={"pid": pid, "reason": reason})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_seconds
            while self.is_running() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.is_running():
                log.warning("scheduler ignored SIGTERM, killing it", extra={"pid": pid})
                os.kill(pid, signal.SIGKILL)
                while self.is_running():
                    await asyncio.sleep(0.05)
        self._stopped_at = time.monotonic()
        self._pid, self._popen, self._digest = None, None, None
        self.state_file.unlink(missing_ok=True)
