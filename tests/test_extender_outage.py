"""The extender while kube-apiserver is down: it serves the last known state, then catches up.

The test starts a control plane of its own, because it stops and restarts its kube-apiserver
(same port, certificates and etcd), and runs ``temper extender`` as a subprocess against it.
"""

import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.controlplane import LocalControlPlane, node_manifest
from temper.controlplane.process import ManagedProcess, free_port
from temper.tiers import Tier
from tests.kubehelpers import pod_manifest, wait_for

pytestmark = pytest.mark.controlplane

# Values written by the test stay fresh for three intervals, longer than the test runs.
PUBLISH_INTERVAL_SECONDS = 300


class RestartableControlPlane(LocalControlPlane):
    """A LocalControlPlane whose kube-apiserver alone can be stopped and started again."""

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver; etcd and kube-scheduler keep running."""
        assert self._apiserver is not None, "kube-apiserver is not running"
        self._apiserver.stop()

    def restart_apiserver(self, timeout_seconds: float = 60.0) -> None:
        """Start kube-apiserver with its previous command line, so on the same port."""
        previous = self._apiserver
        assert previous is not None, "kube-apiserver was never started"
        assert previous.exit_code() is not None, "kube-apiserver is still running"
        self._apiserver = ManagedProcess(previous.name, previous.command, previous.log_path)
        context = ssl.create_default_context(cafile=str(self.ca_path))
        wait_for(lambda: url_ok(f"{self.server}/readyz", context), timeout_seconds)


def url_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def tier_load(normal: int) -> str:
    return TierLoad(
        timestamp_seconds=time.time(),
        node_cpu_millicores=4000,
        tiers={Tier.NORMAL: TierLoadEntry(protection_capacity_millicores=normal)},
    ).encode()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[RestartableControlPlane]:
    control_plane = RestartableControlPlane(tmp_path / "controlplane")
    control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture
def extender(plane: RestartableControlPlane, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The extender subprocess: its base URL and its log file."""
    port = free_port()
    log_path = tmp_path / "extender.log"
    command = [
        sys.executable,
        "-m",
        "temper.cli",
        "extender",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--port",
        str(port),
        "--publish-interval-seconds",
        str(PUBLISH_INTERVAL_SECONDS),
    ]
    process = ManagedProcess("temper-extender", command, log_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: url_ok(url + "readyz"), timeout_seconds=60)
        yield url, log_path
    finally:
        process.stop()


def scores(url: str, names: list[str]) -> dict[str, int]:
    """Prioritize a 1-CPU normal pod over ``names``, as a node-cache-capable scheduler does."""
    body = {"Pod": pod_manifest("web", cpu_request="1"), "Nodes": None, "NodeNames": names}
    request = urllib.request.Request(
        url + "prioritize",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        result: list[dict[str, Any]] = json.load(reply)
    return {entry["Host"]: entry["Score"] for entry in result}


def test_extender_serves_through_apiserver_outage(
    plane: RestartableControlPlane, extender: tuple[str, Path]
) -> None:
    url, log_path = extender
    admin = plane.admin_client()
    for name, normal in (("snug", 1500), ("roomy", 4000)):
        admin.create(
            "/api/v1/nodes", node_manifest(name, annotations={TIER_LOAD: tier_load(normal)})
        )
    known = {"snug": 9, "roomy": 3}
    wait_for(lambda: scores(url, ["snug", "roomy"]) == known)

    plane.stop_apiserver()
    wait_for(lambda: "list/watch failed" in log_path.read_text(), timeout_seconds=30)
    # Unreachable API server: the last known values still count, and the extender stays ready.
    assert scores(url, ["snug", "roomy"]) == known
    assert url_ok(url + "readyz")

    plane.restart_apiserver()
    admin.merge_patch(
        "/api/v1/nodes/snug", {"metadata": {"annotations": {TIER_LOAD: tier_load(500)}}}
    )
    admin.create("/api/v1/nodes", node_manifest("fresh", annotations={TIER_LOAD: tier_load(1200)}))
    # snug no longer fits the pod; fresh is now the tightest fit.
    caught_up = {"snug": 0, "roomy": 3, "fresh": 10}
    wait_for(lambda: scores(url, ["snug", "roomy", "fresh"]) == caught_up, timeout_seconds=90)
