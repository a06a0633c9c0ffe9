"""A FAKE scx_layered statistics server for host tests: the host kernel has no sched_ext.

It listens on a Unix socket and responds to each request line with what ``respond`` returns,
like scx_layered's stats server (one JSON line per request). The valid responses are built
from responses recorded from the real scx_layered 1.1.2 in the sched_ext VM
(``tests/data/scx_layered-1.1.2-stats.json``), so their shape is the real one. The test sets
only the layer names, the task counts and the timestamp.

Standard library only: ``tests/fakes/fake_scx_layered`` runs it under the system Python.
"""

import copy
import json
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RECORDING = Path(__file__).resolve().parent.parent / "data" / "scx_layered-1.1.2-stats.json"

# A responder gets the request line and returns the response line, or None to close
# the connection without a response. A response without a final newline is written and the
# connection closed.
Responder = Callable[[bytes], bytes | None]


def load_recording() -> dict[str, Any]:
    """The recorded responses and their context."""
    recording: dict[str, Any] = json.loads(RECORDING.read_text())
    return recording


def stats_payload(
    layers: Sequence[str], tasks: Mapping[str, int] | None = None, at: float | None = None
) -> dict[str, Any]:
    """The ``resp`` object of a recorded ``stats`` response, for the given layer names.

    Each layer copies the recorded layer of the same name, else the recorded layer at the same
    position, cycling through them. ``index`` follows ``layers``, and ``tasks`` comes from
    ``tasks`` when given.
    """
    recorded = load_recording()["responses"]["with_pods"]["args"]["resp"]
    by_index = sorted(recorded["layers"].items(), key=lambda item: item[1]["index"])
    resp: dict[str, Any] = copy.deepcopy(recorded)
    resp["at"] = time.time() if at is None else at
    resp["layers"] = {}
    for index, name in enumerate(layers):
        source = recorded["layers"].get(name) or by_index[index % len(by_index)][1]
        entry = copy.deepcopy(source)
        entry["index"] = index
        if tasks is not None:
            entry["tasks"] = int(tasks.get(name, 0))
        resp["layers"][name] = entry
    return resp


def encode(message: Any) -> bytes:
    """Encode one response line."""
    return json.dumps(message).encode() + b"\n"


def stats_response(
    layers: Sequence[str], tasks: Mapping[str, int] | None = None, at: float | None = None
) -> bytes:
    """Build a successful ``stats`` response line."""
    return encode({"errno": 0, "args": {"resp": stats_payload(layers, tasks, at)}})


def recorded_response(name: str) -> bytes:
    """A recorded response line as it came from scx_layered, for example ``unknown_target``."""
    return encode(load_recording()["responses"][name])


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        for line in self.rfile:
            self.server.requests.append(line)
            reply = self.server.respond(line)
            if reply is None:
                return
            try:
                self.wfile.write(reply)
                self.wfile.flush()
            except OSError:
                return
            if not reply.endswith(b"\n"):
                return  # a server that dies in the middle of a response


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        super().__init__(path, _Handler)


class FakeStatsServer:
    """Serves ``respond`` on the Unix socket ``path`` from a background thread."""

    def __init__(self, path: Path, respond: Responder) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._server = _Server(str(path), respond)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def requests(self) -> list[bytes]:
        """Every request line received so far."""
        return self._server.requests

    def __enter__(self) -> "FakeStatsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting; like scx_layered, leave the socket file behind."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def stale_socket(path: Path) -> Path:
    """Create a socket file with no listener, as an exited scx_layered leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
    return path


def tasks_from_file(path: str | None) -> Callable[[], dict[str, int] | None]:
    """Read the task count of each layer from a JSON file at each request (None: recorded)."""

    def read() -> dict[str, int] | None:
        if not path or not os.path.exists(path):
            return None
        counts: dict[str, int] = json.loads(Path(path).read_text())
        return counts

    return read
