"""Start etcd, kube-apiserver, kube-scheduler and, on request, kube-controller-manager on
loopback, and stop them in reverse order."""

import logging
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from temper.controlplane.binaries import Binaries, find_binaries
from temper.controlplane.client import AdminClient
from temper.controlplane.process import ManagedProcess, free_port
from temper.errors import ControlPlaneError
from temper.tls import CertificateAuthority, generate_service_account_key

log = logging.getLogger(__name__)

ADMIN_USER = "temper-admin"
# Admission plugins that need kube-controller-manager to undo their effect: without it the
# not-ready taint is never removed and no `default` ServiceAccount is ever created.
DISABLED_ADMISSION_PLUGINS = "ServiceAccount,TaintNodesByCondition"


@dataclass(frozen=True)
class SchedulerExtender:
    """One entry of ``extenders`` in a KubeSchedulerConfiguration."""

    url_prefix: str
    filter_verb: str = "filter"
    prioritize_verb: str = "prioritize"
    weight: int = 5
    node_cache_capable: bool = True
    ignorable: bool = True
    http_timeout_seconds: float = 5.0

    def to_config(self) -> dict[str, Any]:
        """Return the KubeSchedulerConfiguration v1 form."""
        return {
            "urlPrefix": self.url_prefix,
            "filterVerb": self.filter_verb,
            "prioritizeVerb": self.prioritize_verb,
            "weight": self.weight,
            "nodeCacheCapable": self.node_cache_capable,
            "ignorable": self.ignorable,
            "httpTimeout": f"{self.http_timeout_seconds}s",
        }


def _wait_for_url(
    url: str,
    process: ManagedProcess,
    timeout_seconds: float,
    context: ssl.SSLContext | None = None,
) -> None:
    deadline = time.monotonic() + timeout_seconds
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.exit_code() is not None:
            raise ControlPlaneError(
                f"{process.name} exited with code {process.exit_code()} before it was ready; "
                f"last log lines from {process.log_path}:\n{process.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
        time.sleep(0.2)
    raise ControlPlaneError(
        f"{process.name} not ready at {url} after {timeout_seconds} s ({last_error}); "
        f"last log lines from {process.log_path}:\n{process.tail()}"
    )


class LocalControlPlane:
    """etcd, kube-apiserver (TLS, RBAC, client certificates) and kube-scheduler on 127.0.0.1.

    Nodes are plain API objects (no kubelets), so pods bound to them must be deleted with a
    grace period of 0. kube-controller-manager runs only when a caller starts it with the
    controllers it needs (``start_controller_manager``).
    """

    def __init__(self, workdir: Path, binaries: Binaries | None = None) -> None:
        self.workdir = workdir
        self.binaries = binaries or find_binaries()
        self.pki_dir = workdir / "pki"
        self.log_dir = workdir / "logs"
        self.kubeconfig = workdir / "kubeconfig"
        self.apiserver_port = 0
        # schedulerName -> (process, secure port); the default scheduler is "default-scheduler".
        self._schedulers: dict[str, tuple[ManagedProcess, int]] = {}
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._controller_manager: ManagedProcess | None = None

    @property
    def server(self) -> str:
        """The API server URL."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_path(self) -> Path:
        """CA certificate that signed the API server's serving certificate."""
        return self.pki_dir / "ca.crt"

    def admin_client(self) -> AdminClient:
        """Return a JSON client authenticated as the admin (group system:masters)."""
        pki = self.pki_dir
        return AdminClient(self.server, self.ca_path, pki / "admin.crt", pki / "admin.key")

    @property
    def processes(self) -> list[ManagedProcess]:
        """The running processes, in start order."""
        started = [
            self._etcd,
            self._apiserver,
            *(p for p, _ in self._schedulers.values()),
            self._controller_manager,
        ]
        return [p for p in started if p is not None]

    @property
    def scheduler_port(self) -> int:
        """Secure port of the default scheduler."""
        return self._schedulers["default-scheduler"][1]

    def start(
        self,
        extenders: Sequence[SchedulerExtender] = (),
        timeout_seconds: float = 60.0,
    ) -> None:
        """Start everything and wait until each component reports ready."""
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_pki()
            self._start_etcd(timeout_seconds)
            self._start_apiserver(timeout_seconds)
            self._write_kubeconfig()
            self.start_scheduler(extenders, timeout_seconds=timeout_seconds)
        except BaseException:
            self.stop()
            raise
        log.info(
            "control plane ready",
            extra={"server": self.server, "seconds": round(time.monotonic() - started, 1)},
        )

    def _write_pki(self) -> None:
        ca = CertificateAuthority("temper-test-ca")
        ca.key_pair.write(self.pki_dir, "ca")
        ca.issue("kube-apiserver", dns_names=("localhost",), ip_addresses=("127.0.0.1",)).write(
            self.pki_dir, "apiserver"
        )
        ca.issue(ADMIN_USER, organizations=("system:masters",), server=False, client=True).write(
            self.pki_dir, "admin"
        )
        private_key, public_key = generate_service_account_key()
        (self.pki_dir / "sa.key").write_bytes(private_key)
        (self.pki_dir / "sa.pub").write_bytes(public_key)

    def _start_etcd(self, timeout_seconds: float) -> None:
        client_port, peer_port = free_port(), free_port()
        data_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.workdir
        self._etcd_data = data_root / f"temper-etcd-{client_port}"
        client_url = f"http://127.0.0.1:{client_port}"
        self.etcd_url = client_url
        self._etcd = ManagedProcess(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--data-dir={self._etcd_data}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.log_dir / "etcd.log",
        )
        _wait_for_url(f"{client_url}/health", self._etcd, timeout_seconds)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone, to test clients against an unreachable API server."""
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None

    def start_apiserver(self, timeout_seconds: float = 60.0) -> None:
        """Start kube-apiserver again on the same port, with the same etcd data."""
        if self._apiserver is None:
            self._start_apiserver(timeout_seconds)

    def _start_apiserver(self, timeout_seconds: float) -> None:
        if not self.apiserver_port:
            self.apiserver_port = free_port()
        pki = self.pki_dir
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                f"--disable-admission-plugins={DISABLED_ADMISSION_PLUGINS}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki}",
            ],
            self.log_dir / "kube-apiserver.log",
        )
        context = ssl.create_default_context(cafile=str(self.ca_path))
        _wait_for_url(f"{self.server}/readyz", self._apiserver, timeout_seconds, context)

    def _write_kubeconfig(self) -> None:
        pki = self.pki_dir
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "temper-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": ADMIN_USER,
                    "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "temper-local", "context": {"cluster": "temper-local", "user": ADMIN_USER}}
            ],
            "current-context": "temper-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def start_scheduler(
        self,
        extenders: Sequence[SchedulerExtender] = (),
        *,
        scheduler_name: str = "default-scheduler",
        client_qps: int = 5000,
        timeout_seconds: float = 60.0,
    ) -> None:
        """(Re)start the kube-scheduler serving ``scheduler_name`` with these ``extenders``.

        Several schedulers may run side by side, one per scheduler name.
        """
        self.stop_scheduler(scheduler_name)
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {
                "kubeconfig": str(self.kubeconfig),
                "qps": client_qps,
                "burst": client_qps,
            },
            "leaderElection": {"leaderElect": False},
            "profiles": [{"schedulerName": scheduler_name}],
            "extenders": [extender.to_config() for extender in extenders],
        }
        suffix = "" if scheduler_name == "default-scheduler" else f"-{scheduler_name}"
        config_path = self.workdir / f"kube-scheduler{suffix}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        process = ManagedProcess(
            f"kube-scheduler{suffix}",
            [
                str(self.binaries.kube_scheduler),
                f"--config={config_path}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            ],
            self.log_dir / f"kube-scheduler{suffix}.log",
        )
        self._schedulers[scheduler_name] = (process, port)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed in-memory certificate
        _wait_for_url(f"https://127.0.0.1:{port}/readyz", process, timeout_seconds, insecure)

    def stop_scheduler(self, scheduler_name: str | None = None) -> None:
        """Stop the scheduler serving ``scheduler_name``, or every scheduler when None."""
        names = list(self._schedulers) if scheduler_name is None else [scheduler_name]
        for name in names:
            entry = self._schedulers.pop(name, None)
            if entry is not None:
                entry[0].stop()

    def start_controller_manager(
        self, controllers: Sequence[str], timeout_seconds: float = 60.0
    ) -> None:
        """(Re)start kube-controller-manager running only ``controllers``.

        Names are those of ``kube-controller-manager --controllers``, for example
        ``deployment-controller`` or ``disruption-controller``. Controllers that create pods
        (replicaset, daemonset, statefulset) put them on the test's Node objects, where no
        kubelet runs them: start only what a test needs, and stop it afterwards.
        """
        if not controllers:
            raise ControlPlaneError(
                "start_controller_manager needs at least one controller name, for example "
                "disruption-controller"
            )
        self.stop_controller_manager()
        port = free_port()
        process = ManagedProcess(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(controllers)}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            ],
            self.log_dir / "kube-controller-manager.log",
        )
        self._controller_manager = process
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed in-memory certificate
        _wait_for_url(f"https://127.0.0.1:{port}/healthz", process, timeout_seconds, insecure)
        log.info("kube-controller-manager ready", extra={"controllers": list(controllers)})

    def stop_controller_manager(self) -> None:
        """Stop kube-controller-manager if it runs."""
        if self._controller_manager is not None:
            self._controller_manager.stop()
            self._controller_manager = None

    def stop(self) -> None:
        """Stop the controller manager, the schedulers, kube-apiserver and etcd, then remove
        etcd's data."""
        self.stop_controller_manager()
        self.stop_scheduler()
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop()
        self._apiserver = None
        self._etcd = None
        data = getattr(self, "_etcd_data", None)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
