"""Child processes of the control plane: own process group, killed if the parent dies."""

import ctypes
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGKILL when the parent dies,
    # so a crashed test run leaves no etcd or kube-apiserver behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ManagedProcess:
    """A started command whose output goes to a log file."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        log.info("starting %s", name, extra={"log": str(log_path)})
        self._popen = subprocess.Popen(
            self.command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run while tests fork
        )

    @property
    def pid(self) -> int:
        """Process id of the child."""
        return self._popen.pid

    def exit_code(self) -> int | None:
        """The exit status, or None while it runs."""
        return self._popen.poll()

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log file."""
        try:
            content = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(content[-lines:])

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL the whole process group."""
        if self._popen.poll() is None:
            try:
                os.killpg(self._popen.pid, signal.SIGTERM)
                self._popen.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s ignored SIGTERM, killing it",
                    self.name,
                    extra={"timeout_seconds": timeout_seconds},
                )
                os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=timeout_seconds)
            except ProcessLookupError:
                pass
        self._log_file.close()
        log.info("stopped %s", self.name, extra={"exit_code": self._popen.returncode})
