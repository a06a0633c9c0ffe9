"""Shared parts of bench/extender_cpu.py and bench/webhook_cpu.py.

Both scripts run one temper server per source tree under bench/gc_probe.py, send every
request to each server in turn and compare the CPU time the servers spend per request.
"""

import argparse
import http.client
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port

# Script that runs a temper command and records the duration of every garbage collection.
GC_PROBE = Path(__file__).with_name("gc_probe.py")
# Full collections forced per server after the measurements.
FORCED_COLLECTIONS = 5


@dataclass
class ProbedServer:
    """One temper server process run under gc_probe.py and what was measured on it."""

    tree: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    gc_path: Path
    connection: http.client.HTTPConnection
    cpu_us_per_case: dict[str, list[float]] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """Return the CPU seconds that all threads have used so far, from
        /proc/<pid>/task/*/schedstat."""
        total_ns = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                total_ns += int((task / "schedstat").read_text().split()[0])
            except FileNotFoundError:
                continue  # the thread ended between the listing and the read
        return total_ns / 1e9

    def post(self, path: str, body: bytes) -> bytes:
        """Send a JSON body on the keep-alive connection and return the response body.

        Raise RuntimeError unless the status is 200.
        """
        self.connection.request(
            "POST", path, body=body, headers={"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(
                f"POST {path} to the server from {self.tree} failed with HTTP {response.status}: "
                f"{data[:300]!r}. See its log {self.log_path}"
            )
        return data

    def resident_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs, {memory_gib:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def tree_parser(description: str, command: str) -> argparse.ArgumentParser:
    """Make a parser with the ``--tree`` option. Without the option, ``args.tree`` is None."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help=f"source tree to run temper {command} from, repeated to compare trees (default: .)",
    )
    return parser


@contextmanager
def local_plane(prefix: str) -> Iterator[tuple[ExitStack, Path, LocalControlPlane]]:
    """Print the machine, then run a control plane with kube-scheduler stopped in a new
    temporary directory (name starting with ``prefix``) until the context ends.

    Closing the yielded ExitStack first exits what the caller entered into it, then stops
    the plane.
    """
    print(f"machine: {machine()}")
    print(f"load average before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix=prefix) as directory, ExitStack() as stack:
        workdir = Path(directory)
        plane = LocalControlPlane(workdir / "controlplane")
        plane.start()
        stack.callback(plane.stop)
        plane.stop_scheduler()
        yield stack, workdir, plane


@contextmanager
def probed_server(
    command: str,
    plane: LocalControlPlane,
    tree: Path,
    workdir: Path,
    index: int,
    *,
    options: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[ProbedServer]:
    """Run ``temper <command>`` from ``tree`` against the plane until the context ends.

    ``options`` go on the command line after the kubeconfig and the port. With
    ``ssl_context`` the connection uses HTTPS. The connection opens on the first request, so
    the caller decides when the server has to be ready.
    """
    port = free_port()
    log_path = workdir / f"{command}-{index}.log"
    gc_path = workdir / f"gc-{index}.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "TEMPER_BENCH_GC_FILE": str(gc_path)}
    env.update(extra_env or {})
    argv = [
        sys.executable, str(GC_PROBE), command,
        "--kubeconfig", str(plane.kubeconfig),
        "--port", str(port),
        *options,
        "--log-level", "WARNING",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=tree, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        connection = (
            http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if ssl_context is None
            else http.client.HTTPSConnection("127.0.0.1", port, context=ssl_context, timeout=60)
        )
        yield ProbedServer(tree, port, process, log_path, gc_path, connection)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_requests(
    case: str, path: str, bodies: Sequence[bytes], servers: list[ProbedServer]
) -> None:
    """POST every body to every server and record the CPU time per request under ``case``.

    Each request goes to every server in turn, in an order that alternates per request, so
    that all of them run under the same load from other processes. The script exits when two
    servers respond to a request with different bytes.
    """
    before = [server.cpu_seconds() for server in servers]
    for index, body in enumerate(bodies):
        order = servers if index % 2 == 0 else servers[::-1]
        replies = {id(server): server.post(path, body) for server in order}
        expected = replies[id(servers[0])]
        for server in servers[1:]:
            if replies[id(server)] != expected:
                raise SystemExit(
                    f"{case}: responses to request {index} differ between {servers[0].tree} and "
                    f"{server.tree}:\n{expected[:400]!r}\n{replies[id(server)][:400]!r}"
                )
    for server, start_seconds in zip(servers, before, strict=True):
        used = server.cpu_seconds() - start_seconds
        server.cpu_us_per_case.setdefault(case, []).append(used / len(bodies) * 1e6)


def force_collections(servers: list[ProbedServer]) -> None:
    """Make every server run FORCED_COLLECTIONS full collections, one at a time."""
    for _ in range(FORCED_COLLECTIONS):
        for server in servers:
            server.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)


def print_cpu_table(servers: list[ProbedServer], cases: Iterable[str], unit: str) -> None:
    """Print the median CPU time per ``unit`` of every case and server, then every round's."""
    names = list(cases)
    headers = [f"{server.tree} us/{unit}" for server in servers]
    headers += [f"ratio {server.tree} / {servers[0].tree}" for server in servers[1:]]
    print("| Case | " + " | ".join(headers) + " |")
    print("|---" * (1 + len(headers)) + "|")
    for name in names:
        medians = [statistics.median(server.cpu_us_per_case[name]) for server in servers]
        cells = [f"{value:.0f}" for value in medians]
        cells += [f"{value / medians[0]:.2f}" for value in medians[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for server in servers:
        for name in names:
            rounds = ", ".join(f"{value:.0f}" for value in server.cpu_us_per_case[name])
            print(f"{server.tree}, {name}: per round {rounds} us")
