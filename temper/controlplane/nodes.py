"""Node objects that kube-scheduler accepts without a kubelet behind them."""

from collections.abc import Mapping
from typing import Any


def node_manifest(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return a Node with capacity, allocatable (including ``pods``) and a Ready condition.

    The status is accepted on create, as when a kubelet registers. The control plane runs
    without the TaintNodesByCondition admission plugin, so no ``not-ready`` taint is added.
    """
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
            "annotations": dict(annotations or {}),
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "static test node without a kubelet",
                }
            ],
        },
    }
