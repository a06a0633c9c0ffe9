"""Helpers for tests that talk to the real API server."""

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s

from temper.controlplane import node_manifest
from temper.tiers import priority_class_manifests

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], timeout_seconds: float = 30.0, interval_seconds: float = 0.2
) -> T:
    """Poll ``check`` until it returns a truthy value; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_seconds} s")
        time.sleep(interval_seconds)


def create_nodes(core: k8s.CoreV1Api, names: list[str], **kwargs: Any) -> None:
    """Create Ready Node objects that kube-scheduler accepts."""
    for name in names:
        core.create_node(node_manifest(name, **kwargs))


def delete_nodes(core: k8s.CoreV1Api, names: list[str]) -> None:
    """Delete Node objects, ignoring ones already gone."""
    for name in names:
        try:
            core.delete_node(name)
        except k8s.ApiException as error:
            if error.status != 404:
                raise


def pod_manifest(
    name: str,
    *,
    cpu_request: str | None = "100m",
    cpu_limit: str | None = None,
    priority_class: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A one-container pod; the image is never pulled because no kubelet runs."""
    resources: dict[str, dict[str, str]] = {}
    if cpu_request is not None:
        resources.setdefault("requests", {})["cpu"] = cpu_request
    if cpu_limit is not None:
        resources.setdefault("limits", {})["cpu"] = cpu_limit
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "registry.invalid/app:1", "resources": resources}]
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def bound_node(core: k8s.CoreV1Api, namespace: str, name: str) -> str | None:
    """The node a pod is bound to, or None while it is pending."""
    pod = core.read_namespaced_pod(name, namespace)
    node: str | None = pod.spec.node_name
    return node


def ensure_priority_classes(api_client: k8s.ApiClient) -> None:
    """Create the five Temper PriorityClasses, keeping any that already exist."""
    scheduling = k8s.SchedulingV1Api(api_client)
    for manifest in priority_class_manifests():
        try:
            scheduling.create_priority_class(manifest)
        except k8s.ApiException as error:
            if error.status != 409:
                raise
