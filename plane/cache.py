"""Watch-fed copies of the Nodes, Pods and the safe-mode Namespace for the read endpoints."""

import asyncio
from collections.abc import Callable
from typing import Any

from temper.annotations import is_safe_mode_requested
from temper.kube import JsonObject, KubeClient, Reflector
from temper.tasks import TaskOwner

# Called with the kind ("nodes" or "pods"), the watch event type and the slimmed object.
ChangeListener = Callable[[str, str, JsonObject], None]

# Pod fields the read endpoints use; the rest is dropped to keep the cache small.
_POD_SPEC_FIELDS = ("nodeName", "priorityClassName", "priority", "containers")


def _slim_pod(pod: JsonObject) -> JsonObject:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return {
        "metadata": {
            key: metadata[key]
            for key in (
                "name",
                "namespace",
                "uid",
                "annotations",
                "ownerReferences",
                "deletionTimestamp",
            )
            if key in metadata
        },
        "spec": {
            **{key: spec[key] for key in _POD_SPEC_FIELDS if key in spec and key != "containers"},
            "containers": [
                {"name": container.get("name"), "resources": container.get("resources") or {}}
                for container in spec.get("containers") or []
            ],
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def _slim_node(node: JsonObject) -> JsonObject:
    metadata = node.get("metadata") or {}
    return {
        "metadata": {key: metadata[key] for key in ("name", "annotations") if key in metadata},
        "spec": {"unschedulable": (node.get("spec") or {}).get("unschedulable", False)},
        "status": {"allocatable": (node.get("status") or {}).get("allocatable") or {}},
    }


class ClusterCache:
    """Reflectors over Nodes, Pods and the safe-mode Namespace; handlers read their stores."""

    def __init__(self, client: KubeClient, safe_mode_namespace: str) -> None:
        self._listeners: list[ChangeListener] = []
        self.nodes = Reflector(
            client,
            "/api/v1/nodes",
            name="plane-nodes",
            transform=_slim_node,
            on_event=lambda event_type, obj: self._notify("nodes", event_type, obj),
        )
        self.pods = Reflector(
            client,
            "/api/v1/pods",
            name="plane-pods",
            transform=_slim_pod,
            on_event=lambda event_type, obj: self._notify("pods", event_type, obj),
        )
        self.namespace = Reflector(
            client,
            "/api/v1/namespaces",
            name="plane-namespace",
            params={"fieldSelector": f"metadata.name={safe_mode_namespace}"},
        )
        self._tasks = TaskOwner("plane-cache")

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` for every Node and Pod the reflectors list or watch from now on."""
        self._listeners.append(listener)

    def _notify(self, kind: str, event_type: str, obj: JsonObject) -> None:
        for listener in self._listeners:
            listener(kind, event_type, obj)

    def start(self) -> None:
        """Start the list/watch tasks."""
        self._tasks.spawn("nodes", self.nodes.run())
        self._tasks.spawn("pods", self.pods.run())
        self._tasks.spawn("namespace", self.namespace.run())

    async def wait_synced(self, timeout_seconds: float) -> None:
        """Wait until every reflector has listed once; raise TimeoutError after the timeout."""
        async with asyncio.timeout(timeout_seconds):
            for reflector in (self.nodes, self.pods, self.namespace):
                await reflector.synced.wait()

    @property
    def synced(self) -> bool:
        """True once every reflector has listed once."""
        return all(r.synced.is_set() for r in (self.nodes, self.pods, self.namespace))

    def fleet_safe_mode(self) -> bool:
        """True when the safe-mode Namespace carries the safe-mode annotation."""
        return any(
            is_safe_mode_requested((obj.get("metadata") or {}).get("annotations"))
            for obj in self.namespace.store.values()
        )

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        """Return the cached pods bound to ``node``, sorted by namespace and name."""
        return [
            pod
            for _key, pod in sorted(self.pods.store.items())
            if (pod.get("spec") or {}).get("nodeName") == node
        ]

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Stop the reflectors, waiting up to ``timeout_seconds``."""
        await self._tasks.close(timeout_seconds)
