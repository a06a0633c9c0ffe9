"""Run ``temper agent`` as a subprocess against the test control plane."""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temper.controlplane import LocalControlPlane


@contextmanager
def running_agent(
    control_plane: LocalControlPlane, node: str, workdir: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start an agent for ``node``; its log is ``workdir/agent-<node>.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"agent-{node}.log"
    command = [
        sys.executable, "-m", "temper.cli", "agent",
        "--node-name", node,
        "--kubeconfig", str(control_plane.kubeconfig),
        "--config-path", str(workdir / f"{node}.json"),
        "--state-dir", str(workdir / f"state-{node}"),
        "--port", "0",
        "--debounce-seconds", "0.2",
        "--publish-interval-seconds", "1",
        # BPF observation has tests of its own; compiling it for every agent here is slow.
        "--no-bpf-enabled",
        *extra,
    ]  # fmt: skip
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"agent log for {node}:\n{log_path.read_text()[-3000:]}")


def agent_log_contains(workdir: Path, node: str, text: str) -> bool:
    """True when the agent log of ``node`` contains ``text``."""
    path = workdir / f"agent-{node}.log"
    return path.exists() and text in path.read_text(errors="replace")
