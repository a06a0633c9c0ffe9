"""The explorer's reads and the rollout restart: pod detail with its owner chain and layer,
workload manifests, revision history and diffs.

Everything here reads the API server directly (the watch cache keeps only the few fields the
summaries use). Functions raise :class:`ExplorerError` with the HTTP status and a message
that names the object; API server failures other than 404 become 502.
"""

import asyncio
import datetime
import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import yaml

from plane import views
from plane.agents import AgentClient, AgentError
from temper.errors import InvalidQuantityError, KubernetesError
from temper.kube import JsonObject, KubeClient
from temper.tiers import pod_tier

log = logging.getLogger(__name__)

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
CONFIG_HASH_ANNOTATION = "kubernetes.io/config.hash"
MAX_OWNER_DEPTH = 5

# API paths of the owner kinds the owner chain resolves, by (group version, kind).
_OWNER_PATHS = {
    ("apps/v1", "ReplicaSet"): "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    ("apps/v1", "StatefulSet"): "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}",
    ("apps/v1", "DaemonSet"): "/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}",
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
    ("batch/v1", "CronJob"): "/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}",
    ("v1", "ReplicationController"): "/api/v1/namespaces/{namespace}/replicationcontrollers/{name}",
}


@dataclass(frozen=True)
class WorkloadKind:
    """A workload resource the revision history and rollout restart support."""

    resource: str
    kind: str

    def path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/{self.resource}"
        return f"{base}/{quote(name, safe='')}" if name else base


WORKLOAD_KINDS = {
    "deployments": WorkloadKind("deployments", "Deployment"),
    "statefulsets": WorkloadKind("statefulsets", "StatefulSet"),
    "daemonsets": WorkloadKind("daemonsets", "DaemonSet"),
}


class ExplorerError(Exception):
    """A failed explorer request, with the HTTP status and a message naming the object."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _kube_failure(error: KubernetesError, obj: str) -> ExplorerError:
    if error.status == 404:
        return ExplorerError(404, f"{obj} not found")
    log.warning("API server request failed", extra={"object": obj, "error": str(error)})
    return ExplorerError(502, f"{obj}: {error}")


async def read(client: KubeClient, path: str, obj: str, timeout_seconds: float) -> JsonObject:
    """GET ``path``; raise ExplorerError 404 or 502 naming ``obj``."""
    try:
        return await client.request("GET", path, timeout_seconds=timeout_seconds)
    except KubernetesError as error:
        raise _kube_failure(error, obj) from error


def pod_path(namespace: str, name: str) -> str:
    """API path of a Pod."""
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"


def without_managed_fields(obj: Mapping[str, Any]) -> JsonObject:
    """Return a copy of ``obj`` without ``metadata.managedFields``, which only tools need."""
    copy = dict(obj)
    metadata = dict(copy.get("metadata") or {})
    metadata.pop("managedFields", None)
    copy["metadata"] = metadata
    return copy


# -- pods -------------------------------------------------------------------------------------


def qos_class(pod: Mapping[str, Any]) -> str:
    """``status.qosClass``, else the class computed from the containers' resources."""
    reported = (pod.get("status") or {}).get("qosClass")
    if reported:
        return str(reported)
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for resource in ("cpu", "memory"):
            request = requests.get(resource, limits.get(resource))
            limit = limits.get(resource)
            any_set = any_set or request is not None or limit is not None
            if limit is None or str(request) != str(limit):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed and containers else "Burstable"


def _state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    for name in ("running", "waiting", "terminated"):
        detail = (state or {}).get(name)
        if detail is not None:
            entry: dict[str, Any] = {"state": name}
            for key in ("reason", "message", "startedAt", "finishedAt", "exitCode", "signal"):
                if detail.get(key) is not None:
                    entry[key] = detail[key]
            return entry
    return {"state": "unknown"}


def _resources(container: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    resources = container.get("resources") or {}
    return {
        part: {str(k): str(v) for k, v in (resources.get(part) or {}).items()}
        for part in ("requests", "limits")
    }


def container_entries(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """List the pod's containers with image, resources, state and restarts, init first."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    groups = (
        ("init", spec.get("initContainers"), status.get("initContainerStatuses")),
        ("app", spec.get("containers"), status.get("containerStatuses")),
        ("ephemeral", spec.get("ephemeralContainers"), status.get("ephemeralContainerStatuses")),
    )
    entries = []
    for kind, containers, statuses in groups:
        by_name = {s.get("name"): s for s in statuses or []}
        for container in containers or []:
            name = str(container.get("name", ""))
            reported = by_name.get(name) or {}
            sidecar = kind == "init" and container.get("restartPolicy") == "Always"
            entries.append(
                {
                    "name": name,
                    "kind": "sidecar" if sidecar else kind,
                    "image": str(container.get("image", "")),
                    "imageID": reported.get("imageID") or None,
                    "containerID": reported.get("containerID") or None,
                    **_resources(container),
                    "state": _state(reported.get("state")),
                    "lastState": _state(reported.get("lastState"))
                    if reported.get("lastState")
                    else None,
                    "ready": bool(reported.get("ready", False)),
                    "restartCount": int(reported.get("restartCount", 0) or 0),
                }
            )
    return entries


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """Names of every container of the pod, init and ephemeral ones included."""
    spec = pod.get("spec") or {}
    return [
        str(container.get("name", ""))
        for group in ("initContainers", "containers", "ephemeralContainers")
        for container in spec.get(group) or []
    ]


async def owner_chain(
    client: KubeClient, namespace: str, obj: Mapping[str, Any], timeout_seconds: float
) -> list[dict[str, Any]]:
    """Follow the controlling owner references from ``obj`` upwards (at most five steps).

    Each entry has the kind, name, apiVersion and uid of the reference. ``found`` is False for
    an owner the API server no longer has, and None for a kind this function cannot read
    (the chain stops there).
    """
    chain: list[dict[str, Any]] = []
    current: Mapping[str, Any] = obj
    for _ in range(MAX_OWNER_DEPTH):
        references = (current.get("metadata") or {}).get("ownerReferences") or []
        controller = next((r for r in references if r.get("controller")), None)
        if controller is None:
            break
        api_version = str(controller.get("apiVersion", ""))
        kind = str(controller.get("kind", ""))
        name = str(controller.get("name", ""))
        entry: dict[str, Any] = {
            "kind": kind,
            "name": name,
            "apiVersion": api_version,
            "uid": str(controller.get("uid", "")),
            "found": None,
        }
        chain.append(entry)
        template = _OWNER_PATHS.get((api_version, kind))
        if template is None:
            break
        path = template.format(namespace=quote(namespace, safe=""), name=quote(name, safe=""))
        try:
            current = await client.request("GET", path, timeout_seconds=timeout_seconds)
        except KubernetesError as error:
            entry["found"] = False
            if error.status != 404:
                entry["error"] = str(error)[:300]
            break
        entry["found"] = True
    return chain


# -- layers -----------------------------------------------------------------------------------


def _cgroup_strings(block: Sequence[Mapping[str, Any]]) -> tuple[list[str], bool]:
    """Return the cgroup match strings of an AND block and whether it matches thread names."""
    strings: list[str] = []
    by_thread = False
    for match in block:
        for key, value in match.items():
            if key in ("CgroupPrefix", "CgroupRegex"):
                # CgroupRegex alternations hold re.escape()d paths: drop the escapes.
                strings.append(str(value).replace("\\", ""))
            elif key.startswith("Comm") or key.startswith("PcommPrefix"):
                by_thread = True
    return strings, by_thread


def uid_variants(pod: Mapping[str, Any]) -> list[str]:
    """Return the UIDs the pod's cgroup may be named after, in cgroupfs (dashes) and systemd
    (underscores) spelling. A static pod's config hash is one of them."""
    metadata = pod.get("metadata") or {}
    uids = [str(metadata.get("uid", ""))]
    config_hash = (metadata.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)
    if config_hash:
        uids.append(str(config_hash))
    return [form for uid in uids if uid for form in (uid, uid.replace("-", "_"))]


def reported_layer(layers: Sequence[Mapping[str, Any]], uids: Sequence[str]) -> dict[str, Any]:
    """Find the pod's layer in an agent's layer config, as scx_layered picks it.

    The first layer wins that has an OR block whose cgroup matches all name the pod's cgroup
    (by its UID) and that has no thread-name match. Without one, the catch-all layer (an
    empty block) wins. Profile layers that take some of the pod's threads are listed apart.
    """
    layer: str | None = None
    matched_by = ""
    profile_layers: list[str] = []
    catch_all: str | None = None
    for entry in layers:
        name = str(entry.get("name", ""))
        for block in entry.get("matches") or []:
            if not block:
                catch_all = catch_all or name
                continue
            strings, by_thread = _cgroup_strings(block)
            if not any(uid in text for text in strings for uid in uids):
                continue
            if by_thread:
                if name not in profile_layers:
                    profile_layers.append(name)
            elif layer is None:
                layer = name
                matched_by = "cgroup"
    if layer is None and catch_all is not None:
        layer, matched_by = catch_all, "catch-all"
    return {"layer": layer, "matchedBy": matched_by or None, "profileLayers": profile_layers}


async def layer_report(
    agents: AgentClient, pod: Mapping[str, Any], expected: str
) -> dict[str, Any]:
    """Report the layer the agent's rules give the pod and, when its agent is reachable, the
    one its current layer config gives it."""
    node = (pod.get("spec") or {}).get("nodeName")
    report: dict[str, Any] = {
        "expected": expected,
        "reported": None,
        "matchedBy": None,
        "profileLayers": [],
        "agentUrl": None,
        "agentScheduler": None,
        "agentError": None,
    }
    if not node:
        report["agentError"] = "the pod is not bound to a node yet"
        return report
    try:
        answer = await agents.get_json(str(node), "/config")
    except AgentError as error:
        report["agentError"] = error.message
        return report
    report["agentUrl"] = answer.url
    report["agentScheduler"] = answer.body.get("scheduler")
    layers = answer.body.get("layers")
    if not isinstance(layers, list):
        report["agentError"] = "the agent has not computed a layer config yet"
        return report
    found = reported_layer(
        [entry for entry in layers if isinstance(entry, dict)], uid_variants(pod)
    )
    report["reported"] = found["layer"]
    report["matchedBy"] = found["matchedBy"]
    report["profileLayers"] = found["profileLayers"]
    return report


def expected_layer(pod: Mapping[str, Any]) -> tuple[str, int | None]:
    """Return the layer the agent's rules give the pod, and its summed CPU limit."""
    try:
        limit = views.pod_cpu_limit_millicores(pod)
    except InvalidQuantityError:
        limit = None
    return views.pod_layer(pod_tier(pod), limit), limit


async def priority_class(
    client: KubeClient, pod: Mapping[str, Any], timeout_seconds: float
) -> tuple[dict[str, Any] | None, str | None]:
    """Read the pod's PriorityClass (name, value, preemptionPolicy, globalDefault) or an error."""
    name = (pod.get("spec") or {}).get("priorityClassName")
    if not name:
        return None, None
    path = f"/apis/scheduling.k8s.io/v1/priorityclasses/{quote(str(name), safe='')}"
    try:
        found = await client.request("GET", path, timeout_seconds=timeout_seconds)
    except KubernetesError as error:
        if error.status == 404:
            return None, f"PriorityClass {name} not found"
        return None, f"PriorityClass {name}: {error}"
    return {
        "name": str(name),
        "value": found.get("value"),
        "preemptionPolicy": found.get("preemptionPolicy", "PreemptLowerPriority"),
        "globalDefault": bool(found.get("globalDefault", False)),
        "description": found.get("description"),
    }, None


async def pod_detail(
    client: KubeClient,
    agents: AgentClient,
    namespace: str,
    name: str,
    timeout_seconds: float,
) -> dict[str, Any]:
    """Read the pod with containers, tier, PriorityClass, layer, QoS class and owner chain."""
    pod = await read(client, pod_path(namespace, name), f"pod {namespace}/{name}", timeout_seconds)
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    layer, limit = expected_layer(pod)
    owners, layer_info, (klass, klass_error) = await asyncio.gather(
        owner_chain(client, namespace, pod, timeout_seconds),
        layer_report(agents, pod, layer),
        priority_class(client, pod, timeout_seconds),
    )
    return {
        "namespace": namespace,
        "name": name,
        "uid": str(metadata.get("uid", "")),
        "node": spec.get("nodeName"),
        "phase": str(status.get("phase", "Pending")),
        "createdAt": metadata.get("creationTimestamp"),
        "terminating": metadata.get("deletionTimestamp") is not None,
        "podIP": status.get("podIP"),
        "hostIP": status.get("hostIP"),
        "labels": {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        "tier": pod_tier(pod).value,
        "priorityClassName": spec.get("priorityClassName"),
        "priority": spec.get("priority"),
        "priorityClass": klass,
        "priorityClassError": klass_error,
        "qosClass": qos_class(pod),
        "cpuLimitMillicores": limit,
        "layer": layer_info,
        "owners": owners,
        "conditions": [
            {key: c.get(key) for key in ("type", "status", "reason", "message") if key in c}
            for c in status.get("conditions") or []
        ],
        "containers": container_entries(pod),
    }


# -- revisions --------------------------------------------------------------------------------


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """Return the string form of a LabelSelector (matchLabels and matchExpressions)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expression in (selector or {}).get("matchExpressions") or []:
        key = expression.get("key", "")
        values = ",".join(str(v) for v in expression.get("values") or [])
        operator = expression.get("operator")
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in references)


def _clean_template(template: Mapping[str, Any] | None) -> JsonObject:
    cleaned = dict(template or {})
    cleaned.pop("$patch", None)
    metadata = dict(cleaned.get("metadata") or {})
    labels = dict(metadata.get("labels") or {})
    labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    metadata.pop("creationTimestamp", None)
    cleaned["metadata"] = metadata
    return cleaned


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def workload(
    client: KubeClient, kind: WorkloadKind, namespace: str, name: str, timeout_seconds: float
) -> JsonObject:
    """Read a Deployment, StatefulSet or DaemonSet; ExplorerError 404 when it does not exist."""
    return await read(
        client,
        kind.path(namespace, name),
        f"{kind.kind.lower()} {namespace}/{name}",
        timeout_seconds,
    )


async def revisions(
    client: KubeClient, kind: WorkloadKind, namespace: str, name: str, timeout_seconds: float
) -> list[dict[str, Any]]:
    """List the revisions of a workload, oldest first, each with its pod template.

    A Deployment's revisions are its ReplicaSets (``deployment.kubernetes.io/revision``); a
    StatefulSet's and a DaemonSet's are their ControllerRevisions.
    """
    obj = await workload(client, kind, namespace, name, timeout_seconds)
    metadata = obj.get("metadata") or {}
    uid = str(metadata.get("uid", ""))
    selector = label_selector((obj.get("spec") or {}).get("selector"))
    resource = "replicasets" if kind.kind == "Deployment" else "controllerrevisions"
    path = f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/{resource}"
    params = {"labelSelector": selector} if selector else None
    try:
        listing = await client.request("GET", path, params=params, timeout_seconds=timeout_seconds)
    except KubernetesError as error:
        raise _kube_failure(
            error, f"{resource} of {kind.kind.lower()} {namespace}/{name}"
        ) from error
    entries: list[dict[str, Any]] = []
    for item in listing.get("items") or []:
        if not _owned_by(item, uid):
            continue
        item_metadata = item.get("metadata") or {}
        item_annotations = item_metadata.get("annotations") or {}
        if kind.kind == "Deployment":
            number = _int_or_none(item_annotations.get(REVISION_ANNOTATION))
            template = (item.get("spec") or {}).get("template")
            replicas = (item.get("status") or {}).get("replicas", 0)
        else:
            number = _int_or_none(item.get("revision"))
            template = ((item.get("data") or {}).get("spec") or {}).get("template")
            replicas = None
        if number is None:
            log.warning(
                "revision without a number skipped",
                extra={"workload": f"{namespace}/{name}", "object": item_metadata.get("name")},
            )
            continue
        entries.append(
            {
                "revision": number,
                "name": str(item_metadata.get("name", "")),
                "createdAt": item_metadata.get("creationTimestamp"),
                "changeCause": item_annotations.get(CHANGE_CAUSE_ANNOTATION),
                "replicas": replicas,
                "current": False,
                "template": _clean_template(template),
            }
        )
    entries.sort(key=lambda entry: int(entry["revision"]))
    if entries:
        _mark_current(kind, obj, entries)
    return entries


def _mark_current(
    kind: WorkloadKind, obj: Mapping[str, Any], entries: list[dict[str, Any]]
) -> None:
    current: dict[str, Any] | None = None
    if kind.kind == "Deployment":
        wanted = _int_or_none(
            ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
        )
        current = next((e for e in entries if e["revision"] == wanted), None)
    elif kind.kind == "StatefulSet":
        wanted_name = (obj.get("status") or {}).get("updateRevision")
        current = next((e for e in entries if e["name"] == wanted_name), None)
    (current or entries[-1])["current"] = True


def template_yaml(template: Mapping[str, Any]) -> str:
    """Return the pod template as YAML with sorted keys, the form the diffs compare."""
    return str(yaml.safe_dump(dict(template), sort_keys=True, default_flow_style=False))


def revision_diff(
    kind: WorkloadKind,
    namespace: str,
    name: str,
    entries: Sequence[Mapping[str, Any]],
    *,
    from_revision: int | None,
    to_revision: int | None,
) -> dict[str, Any]:
    """Compute a unified diff between the pod templates of two revisions.

    Defaults: ``to`` is the current revision, ``from`` the revision before ``to``.
    """
    workload_name = f"{kind.kind.lower()} {namespace}/{name}"
    by_number = {int(entry["revision"]): entry for entry in entries}
    numbers = sorted(by_number)
    if not numbers:
        raise ExplorerError(404, f"{workload_name} has no revisions")
    if to_revision is None:
        to_revision = next((int(e["revision"]) for e in entries if e.get("current")), numbers[-1])
    if from_revision is None:
        older = [number for number in numbers if number < to_revision]
        if not older:
            raise ExplorerError(
                404,
                f"{workload_name} has no revision before {to_revision} to compare with; "
                f"its revisions are {numbers}",
            )
        from_revision = older[-1]
    for label, number in (("from", from_revision), ("to", to_revision)):
        if number not in by_number:
            raise ExplorerError(
                404,
                f"{workload_name} has no revision {number} ({label}); its revisions are {numbers}",
            )
    left = template_yaml(by_number[from_revision]["template"]).splitlines(keepends=True)
    right = template_yaml(by_number[to_revision]["template"]).splitlines(keepends=True)
    diff = "".join(
        difflib.unified_diff(
            left,
            right,
            fromfile=f"{kind.resource}/{name} revision {from_revision}",
            tofile=f"{kind.resource}/{name} revision {to_revision}",
        )
    )
    return {
        "namespace": namespace,
        "kind": kind.kind,
        "name": name,
        "from": from_revision,
        "to": to_revision,
        "identical": diff == "",
        "diff": diff,
    }


# -- rollout restart --------------------------------------------------------------------------


async def rollout_restart(
    client: KubeClient, kind: WorkloadKind, namespace: str, name: str, timeout_seconds: float
) -> str:
    """Set ``kubectl.kubernetes.io/restartedAt`` on the pod template, as kubectl does.

    Refuses a paused Deployment and a StatefulSet or DaemonSet whose update strategy is not
    RollingUpdate (409), as kubectl does. The patch carries the resourceVersion read, and a
    concurrent change is retried up to three times. Returns the timestamp written.
    """
    workload_name = f"{kind.kind.lower()} {namespace}/{name}"
    for attempt in range(3):
        obj = await workload(client, kind, namespace, name, timeout_seconds)
        spec = obj.get("spec") or {}
        if kind.kind == "Deployment" and spec.get("paused"):
            raise ExplorerError(
                409, f"{workload_name} is paused; resume it before a rollout restart"
            )
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if kind.kind != "Deployment" and strategy != "RollingUpdate":
            raise ExplorerError(
                409,
                f"{workload_name} has updateStrategy {strategy}; a rollout restart needs "
                "RollingUpdate (with OnDelete, delete its pods instead)",
            )
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {
            "metadata": {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")},
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now}}}},
        }
        try:
            await client.request(
                "PATCH",
                kind.path(namespace, name),
                body=patch,
                content_type="application/merge-patch+json",
                timeout_seconds=timeout_seconds,
            )
        except KubernetesError as error:
            if error.status == 409 and attempt < 2:
                log.info(
                    "workload changed during restart, retrying", extra={"workload": workload_name}
                )
                continue
            raise _kube_failure(error, workload_name) from error
        log.info("rollout restart requested", extra={"workload": workload_name, "restartedAt": now})
        return now
    raise ExplorerError(409, f"{workload_name} kept changing; retry the restart")
