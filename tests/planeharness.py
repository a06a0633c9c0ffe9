"""Run management planes for tests: in-process on loopback, or as `temper plane serve`
subprocesses, each against the real control plane."""

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestServer

from plane.app import build_app
from plane.cache import ClusterCache
from plane.settings import PlaneSettings
from plane.store import Role, Store
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from temper.kube import KubeClient
from tests.kubehelpers import wait_for

T = TypeVar("T")


@dataclass
class PlaneClient:
    """HTTP calls to one plane; ``store`` is its token store when it runs in-process."""

    url: str
    http: aiohttp.ClientSession
    store: Store | None = None

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send a request with ``token`` (None: none); return the status and decoded body."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.url + path, headers=all_headers, json=body
        ) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text

    async def audit(self, admin_token: str) -> list[dict[str, Any]]:
        """Return the plane's audit log through its export endpoint."""
        status, text = await self.call("GET", "/api/v1/audit?format=jsonl", admin_token)
        assert status == 200, text
        return [json.loads(line) for line in str(text).splitlines()]


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_seconds: float = 20.0) -> T:
    """Poll ``check`` until it returns a truthy value."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_seconds} s")
        await asyncio.sleep(0.2)


def create_tokens(database: Path, roles: dict[str, Role]) -> dict[str, str]:
    """Create one token per name with its role in the plane database; return them by name."""
    store = Store(database)
    try:
        return {name: store.create_token(name, role) for name, role in roles.items()}
    finally:
        store.close()


@asynccontextmanager
async def plane_in_process(
    control_plane: LocalControlPlane, settings: PlaneSettings
) -> AsyncIterator[PlaneClient]:
    """Serve a plane with ``settings`` on a loopback port of this process."""
    store = Store(settings.database_path)
    client = await KubeClient.connect(str(control_plane.kubeconfig))
    cache = ClusterCache(client, settings.safe_mode_namespace)
    cache.start()
    server: TestServer | None = None
    http = aiohttp.ClientSession()
    try:
        await cache.wait_synced(30.0)
        server = TestServer(build_app(settings, client, store, cache), host="127.0.0.1")
        await server.start_server()
        yield PlaneClient(str(server.make_url("")).rstrip("/"), http, store)
    finally:
        await http.close()
        if server is not None:
            await server.close()
        await cache.close()
        await client.close()
        # aiohttp closes TLS transports asynchronously: give the API server connections a
        # moment to close, or their sockets surface later as ResourceWarnings.
        await asyncio.sleep(0.25)
        store.close()


def http_status(url: str) -> int | None:
    """GET ``url`` without a token; return the status, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError):
        return None


@contextmanager
def plane_process(
    control_plane: LocalControlPlane, database: Path, namespace: str, *arguments: str
) -> Iterator[str]:
    """Run `temper plane serve` on a free loopback port until the block ends; yield its URL.

    The log is printed at the end, and a non-zero exit code fails the block.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "temper.cli", "plane", "serve",
        "--kubeconfig", str(control_plane.kubeconfig),
        "--database-path", str(database),
        "--safe-mode-namespace", namespace,
        "--port", str(port),
        *arguments,
    ]  # fmt: skip
    log_path = database.with_suffix(".log")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or http_status(f"{base}/healthz") == 200)
        assert process.poll() is None, log_path.read_text()[-3000:]
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)
        print(log_path.read_text()[-3000:])
    assert process.returncode == 0
