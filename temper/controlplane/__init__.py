"""A local Kubernetes control plane (etcd, kube-apiserver, kube-scheduler) for tests and the demo.

The binaries are built from the Go module proxy by ``scripts/build-control-plane.sh`` into a
versioned cache directory; this package only looks them up and runs them on loopback.
"""

from temper.controlplane.binaries import Binaries, find_binaries
from temper.controlplane.cluster import LocalControlPlane, SchedulerExtender
from temper.controlplane.nodes import node_manifest

__all__ = ["Binaries", "LocalControlPlane", "SchedulerExtender", "find_binaries", "node_manifest"]
