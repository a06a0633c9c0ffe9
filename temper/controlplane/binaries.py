"""Locate the Go-built control-plane binaries in the versioned cache directory."""

import os
from dataclasses import dataclass
from pathlib import Path

from temper.errors import ControlPlaneError

# Keep in step with scripts/build-control-plane.sh (a test compares them).
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v4.3.2"
BUILD_SCRIPT = "scripts/build-control-plane.sh"


def cache_root() -> Path:
    """``$TEMPER_CACHE_DIR``, or ``~/.cache/temper``."""
    configured = os.environ.get("TEMPER_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "temper"


def default_bin_dir() -> Path:
    """Directory the build script writes the binaries to."""
    versions = f"kubernetes-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-helm-{HELM_VERSION}"
    return cache_root() / "controlplane" / versions / "bin"


@dataclass(frozen=True)
class Binaries:
    """Paths of the five executables."""

    etcd: Path
    kube_apiserver: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    helm: Path


def find_binaries(bin_dir: Path | None = None) -> Binaries:
    """Return the cached binaries or raise ControlPlaneError saying how to build them."""
    directory = bin_dir or Path(os.environ.get("TEMPER_CONTROLPLANE_BIN_DIR", default_bin_dir()))
    binaries = Binaries(
        etcd=directory / "etcd",
        kube_apiserver=directory / "kube-apiserver",
        kube_scheduler=directory / "kube-scheduler",
        kube_controller_manager=directory / "kube-controller-manager",
        helm=directory / "helm",
    )
    missing = [str(path) for path in vars(binaries).values() if not os.access(path, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"control-plane binaries not found: {', '.join(missing)}; build them with "
            f"{BUILD_SCRIPT} (the first build takes 20-30 minutes) or set "
            "TEMPER_CONTROLPLANE_BIN_DIR"
        )
    return binaries
