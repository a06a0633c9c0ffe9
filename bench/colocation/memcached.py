"""The memcached server under test: started in its pod cgroup, preloaded, stopped at the end."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.colocation.processes import BenchmarkError, ProcessSet

READY_TIMEOUT_SECONDS = 30.0
PRELOAD_BATCH = 500


def memcached_binary() -> Path:
    """Path of the ``memcached`` program, or a BenchmarkError naming the package to install."""
    found = shutil.which("memcached") or (
        "/usr/bin/memcached" if Path("/usr/bin/memcached").exists() else None
    )
    if found is None:
        raise BenchmarkError("memcached not found: install it with apt-get install memcached")
    return Path(found)


def start_memcached(
    processes: ProcessSet, procs_file: Path, port: int, threads: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start memcached on 127.0.0.1:``port`` (TCP only) inside a cgroup and wait until it accepts.

    The returned process is memcached itself: the shell that moved it into the cgroup
    executes it in place.
    """
    command = [
        str(memcached_binary()),
        "-U", "0",
        "-p", str(port),
        "-l", "127.0.0.1",
        "-t", str(threads),
        "-m", "256",
        "-c", "1024",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # memcached refuses to run as root without -u
    process = processes.start(command, procs_file, log_path=log_path)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(
                f"memcached exited with code {process.returncode} at start (see {log_path})"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return process
        except OSError:
            time.sleep(0.05)
    raise BenchmarkError(
        f"memcached did not accept connections on 127.0.0.1:{port} within "
        f"{READY_TIMEOUT_SECONDS:.0f} s (see {log_path})"
    )


def preload(port: int, keys: int, value_bytes: int) -> None:
    """Store every key the load generator reads (``key:%08u``), so that gets are hits."""
    value = b"v" * value_bytes
    with socket.create_connection(("127.0.0.1", port), timeout=30.0) as connection:
        for first in range(0, keys, PRELOAD_BATCH):
            batch = range(first, min(keys, first + PRELOAD_BATCH))
            request = b"".join(
                b"set key:%08d 0 0 %d\r\n%s\r\n" % (key, value_bytes, value) for key in batch
            )
            connection.sendall(request)
            expected = len(batch) * len(b"STORED\r\n")
            received = b""
            while len(received) < expected:
                chunk = connection.recv(65536)
                if not chunk:
                    raise BenchmarkError("memcached closed the connection during the preload")
                received += chunk
            if received != b"STORED\r\n" * len(batch):
                raise BenchmarkError(f"memcached rejected a preload set: {received[:200]!r}")
