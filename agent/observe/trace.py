"""Bounded scheduler trace capture through a private tracefs instance.

A capture creates ``instances/temper-<pid>`` under tracefs, whose ring buffer is its own, so it
never disturbs another tracer. It enables the scheduler events, records for the requested
seconds and returns the instance's ``trace`` file. That is the ftrace text format, which the
Perfetto UI imports (it recognises the ``# tracer:`` header). The ring buffer is sized from the
byte limit and the returned text is cut at the last whole line within that limit. One capture
runs at a time.
"""

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EVENTS = (
    "sched/sched_switch",
    "sched/sched_wakeup",
    "sched/sched_wakeup_new",
    "sched/sched_waking",
    "sched/sched_migrate_task",
    "sched/sched_process_exit",
    "sched/sched_process_fork",
)
# The text of one event is about three times its binary size in the ring buffer.
TEXT_EXPANSION = 3


class TraceBusyError(Exception):
    """A capture is already running."""


class TraceUnavailableError(Exception):
    """tracefs cannot be used; the message states why and how to fix it."""


def find_tracefs(configured: Path | None) -> Path | None:
    """Return the tracefs mount to use (the setting, else a standard place); None when unmounted."""
    candidates = [configured] if configured else []
    candidates += [Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")]
    for candidate in candidates:
        if (candidate / "instances").is_dir():
            return candidate
    return None


@dataclass
class CaptureInfo:
    """The capture in progress."""

    started: float
    seconds: float


class TraceCapture:
    """Runs one bounded capture at a time."""

    def __init__(self, tracefs: Path | None, max_seconds: float, max_bytes: int) -> None:
        self.configured = tracefs
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.current: CaptureInfo | None = None
        self.instance_name = f"temper-{os.getpid()}"

    def busy_message(self) -> str:
        """Why a second capture is rejected, with when to retry."""
        current = self.current
        if current is None:
            return "a trace capture is already running; retry when it has finished"
        left = max(0.0, current.started + current.seconds - time.time())
        return (
            f"a trace capture of {current.seconds:g} s is already running (about {left:.0f} s "
            "left); only one capture runs at a time, retry when it has finished"
        )

    async def capture(self, seconds: float) -> bytes:
        """Record ``seconds`` (at most the configured maximum) of scheduler events."""
        if self.current is not None:
            raise TraceBusyError(self.busy_message())
        tracefs = find_tracefs(self.configured)
        if tracefs is None:
            raise TraceUnavailableError(
                "tracefs is not mounted (no instances/ under /sys/kernel/tracing or "
                "/sys/kernel/debug/tracing); mount it with 'mount -t tracefs nodev "
                "/sys/kernel/tracing' or set --tracefs-path"
            )
        seconds = min(seconds, self.max_seconds)
        self.current = CaptureInfo(time.time(), seconds)
        instance = tracefs / "instances" / self.instance_name
        try:
            await asyncio.to_thread(self._prepare, instance)
            log.info("trace capture started", extra={"seconds": seconds, "instance": str(instance)})
            await asyncio.sleep(seconds)
            (instance / "tracing_on").write_text("0")
            data = await asyncio.to_thread(self._read, instance)
        except OSError as error:
            raise TraceUnavailableError(
                f"trace capture through {instance} failed: {error}; the agent needs root (or "
                "CAP_SYS_ADMIN) and a writable tracefs"
            ) from error
        finally:
            try:
                await asyncio.to_thread(self._remove, instance)
            except OSError as error:
                log.error(
                    "cannot remove the tracefs instance; remove it by hand",
                    extra={"instance": str(instance), "error": str(error)},
                )
            self.current = None
        log.info("trace capture finished", extra={"seconds": seconds, "bytes": len(data)})
        return data

    def _prepare(self, instance: Path) -> None:
        self._remove(instance)  # left behind by a crashed agent with the same pid
        instance.mkdir()
        cpus = os.cpu_count() or 1
        per_cpu_kb = max(16, self.max_bytes // TEXT_EXPANSION // cpus // 1024)
        (instance / "buffer_size_kb").write_text(str(per_cpu_kb))
        for event in EVENTS:
            enable = instance / "events" / event / "enable"
            if enable.exists():
                enable.write_text("1")
        (instance / "tracing_on").write_text("1")

    def _read(self, instance: Path) -> bytes:
        with (instance / "trace").open("rb") as handle:
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            data = data[: data.rfind(b"\n", 0, self.max_bytes) + 1]
        return data

    @staticmethod
    def _remove(instance: Path) -> None:
        if instance.is_dir():
            with contextlib.suppress(OSError):
                (instance / "tracing_on").write_text("0")
            instance.rmdir()
