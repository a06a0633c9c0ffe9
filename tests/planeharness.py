"""Run management planes for tests: in-process on loopback, or as `temper plane serve`
subprocesses, each against the real control plane. Also the steps that several plane test
modules share: Nodes, guarded pods and generated requests."""

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import hypothesis
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client as k8s
from schemathesis.core.result import Err

from plane.app import build_app
from plane.cache import ClusterCache
from plane.settings import PlaneSettings
from plane.store import Role, Store
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from temper.kube import KubeClient
from tests.kubehelpers import create_nodes, delete_nodes, wait_for

T = TypeVar("T")


@dataclass
class PlaneClient:
    """A client for one plane's HTTP API. ``store`` and ``app`` are the plane's token store
    and application when it runs in-process."""

    url: str
    http: aiohttp.ClientSession
    store: Store | None = None
    app: web.Application | None = None

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


def create_role_tokens(database: Path, prefix: str) -> dict[Role, str]:
    """Create one token per role, named <prefix>-<role>, in the plane database and return
    them by role."""
    names = {role: f"{prefix}-{role.value}" for role in Role}
    tokens = create_tokens(database, {name: role for role, name in names.items()})
    return {role: tokens[name] for role, name in names.items()}


@dataclass
class RolePlane:
    """A plane served in-process with one token per role, named test-<role>."""

    client: PlaneClient
    tokens: dict[Role, str]

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.client.http

    @property
    def store(self) -> Store:
        assert self.client.store is not None
        return self.client.store

    @property
    def app(self) -> web.Application:
        assert self.client.app is not None
        return self.client.app

    def headers(self, role: Role | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    async def call(
        self, method: str, path: str, role: Role | None = Role.VIEWER, body: Any = None
    ) -> tuple[int, Any]:
        """Send a request with ``role``'s token (None: no token) and return the status and
        the body."""
        return await self.client.call(method, path, self.tokens[role] if role else None, body)

    def audit(self) -> list[dict[str, Any]]:
        """Return the audit entries in the export's JSON form, read directly from the store."""
        return [entry.to_json() for entry in self.store.audit_entries()]

    def last_audit(self, operation: str) -> dict[str, Any]:
        """Return the newest audit entry of ``operation``."""
        return [entry for entry in self.audit() if entry["operation"] == operation][-1]


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
        app = build_app(settings, client, store, cache)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        yield PlaneClient(str(server.make_url("")).rstrip("/"), http, store, app)
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


@asynccontextmanager
async def role_plane(
    control_plane: LocalControlPlane, settings: PlaneSettings
) -> AsyncIterator[RolePlane]:
    """Serve a plane with ``settings`` in this process, with one token per role."""
    tokens = create_role_tokens(settings.database_path, "test")
    async with plane_in_process(control_plane, settings) as client:
        yield RolePlane(client, tokens)


def http_status(url: str, token: str | None = None) -> int | None:
    """GET ``url`` with ``token`` (None: no token) and return the status, or None when the
    connection fails."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError):
        return None


def plane_log_path(database: Path) -> Path:
    """Return the log file of a `temper plane serve` process started on ``database``."""
    return database.with_suffix(".log")


@contextmanager
def plane_subprocess(
    control_plane: LocalControlPlane, database: Path, namespace: str, *arguments: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `temper plane serve` on a free loopback port and yield its URL and the process
    at once, without waiting for it to listen.

    At the end of the block the process is terminated unless it has exited, and the end of
    its log is printed.
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
    log_path = plane_log_path(database)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)
        print(log_path.read_text()[-3000:])


@contextmanager
def plane_process(
    control_plane: LocalControlPlane, database: Path, namespace: str, *arguments: str
) -> Iterator[str]:
    """Run `temper plane serve` on a free loopback port until the block ends, and yield its
    URL once /healthz returns 200.

    The log is printed at the end, and a non-zero exit code fails the block.
    """
    with plane_subprocess(control_plane, database, namespace, *arguments) as (base, process):
        wait_for(lambda: process.poll() is not None or http_status(f"{base}/healthz") == 200)
        assert process.poll() is None, plane_log_path(database).read_text()[-3000:]
        yield base
    assert process.returncode == 0


def fresh_node(core_api: k8s.CoreV1Api, prefix: str, **options: Any) -> Iterator[str]:
    """Create a Ready Node named <prefix>-<random hex>, yield its name and delete the Node
    when the generator resumes. ``options`` go to create_nodes."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_nodes(core_api, [name], **options)
    yield name
    delete_nodes(core_api, [name])


def point_node_at_kubelet(core_api: k8s.CoreV1Api, node: str, port: int) -> None:
    """Publish 127.0.0.1 and ``port`` as the Node's kubelet endpoint, so that the API server
    sends the Node's log requests to a fake kubelet listening there."""
    core_api.patch_node_status(
        node,
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }
        },
    )


def mark_running_and_ready(core_api: k8s.CoreV1Api, namespace: str, name: str) -> None:
    """Report the pod Running and Ready, as a kubelet would, because the Eviction API
    ignores PodDisruptionBudgets for Pending pods."""
    core_api.patch_namespaced_pod_status(
        name,
        namespace,
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    )


def create_guarded_pods(
    api_client: k8s.ApiClient,
    namespace: str,
    manifests: list[dict[str, Any]],
    labels: dict[str, str],
    *,
    budget: str,
    min_available: int,
) -> k8s.PolicyV1Api:
    """Create the pods, report them Running and Ready, and create the PodDisruptionBudget
    ``budget`` that keeps ``min_available`` pods with ``labels``. Return the policy API."""
    core_api = k8s.CoreV1Api(api_client)
    for manifest in manifests:
        core_api.create_namespaced_pod(namespace, manifest)
        mark_running_and_ready(core_api, namespace, manifest["metadata"]["name"])
    policy = k8s.PolicyV1Api(api_client)
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": budget},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels}},
        },
    )
    return policy


def fuzz_operations(
    schema: schemathesis.BaseSchema,
    send: Callable[[Any], int],
    path_prefixes: tuple[str, ...] = ("/",),
) -> tuple[list[int], list[str]]:
    """Send 15 generated requests per operation of ``schema`` whose path starts with one of
    ``path_prefixes``, each through ``send``, which returns the status.

    Return every status and one line per request that got a 5xx status.
    """
    statuses: list[int] = []
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        if not operation.path.startswith(path_prefixes):
            continue

        @hypothesis.settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            status = send(case)
            statuses.append(status)
            if status >= 500:
                server_errors.append(f"{case.method} {case.formatted_path}: {status}")

        check()
    return statuses, server_errors
