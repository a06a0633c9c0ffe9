"""The savings report: CPU the webhook already gave back (realized reclaim), separated from
what the rightsizer's pending recommendations would give back (identified opportunity),
priced per machine type.

Pure functions over the savings cache's slim objects (see ``savings_cache.py``), so the
report can be computed from any snapshot of Nodes, Pods and workloads.

- Realized CPU: for each Pod with ``temper.codes/original-requests``, its effective CPU
  request computed from the original container requests minus the one from its current
  requests, priced at the CPU-core-hour price of its Node's machine type.
- Realized Nodes: per machine type, the Nodes first-fit decreasing packing needs for the
  original requests minus the Nodes it needs for the current ones (``packing.py``), priced
  at the node-hour price. Both realized figures describe the same reclaim and are not added.
- Opportunity: for each workload whose ``temper.codes/recommendation`` is not dismissed, the
  current request of each live Pod's container minus the recommended one, where positive.
"""

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from plane import packing, prices
from plane.prices import Price, PriceBook, PriceTable
from plane.savings_cache import MIRROR_POD_ANNOTATION
from temper import annotations
from temper.errors import InvalidAnnotationError, InvalidQuantityError
from temper.kube import object_key
from temper.quantity import cpu_millicores

log = logging.getLogger(__name__)

RECOMMENDATION_VERSION = 1
RECOMMENDATION_STATUSES = ("proposed", "accepted", "dismissed")
TERMINAL_PHASES = ("Succeeded", "Failed")
# Problems listed in one report; the count of the rest is given.
MAX_PROBLEMS = 50

# (list key in the pod spec, container name) -> CPU request in millicores, None when unset.
ContainerRequests = dict[tuple[str, str], int | None]


# -- requests ---------------------------------------------------------------------------------


def _request(container: Mapping[str, Any]) -> int | None:
    raw = ((container.get("resources") or {}).get("requests") or {}).get("cpu")
    return None if raw is None else cpu_millicores(raw)


def container_requests(spec: Mapping[str, Any]) -> ContainerRequests:
    """Return the CPU request of every container and init container of a pod spec."""
    return {
        (list_key, str(container.get("name", ""))): _request(container)
        for list_key in ("containers", "initContainers")
        for container in spec.get(list_key) or []
    }


def effective_request_millicores(
    spec: Mapping[str, Any], overrides: ContainerRequests | None = None
) -> int:
    """Return a pod's CPU request as kube-scheduler counts it.

    A pod-level ``resources.requests.cpu`` wins. Otherwise: the larger of the app containers
    plus restartable init containers (sidecars), and the peak of the init sequence, where each
    classic init container runs beside the sidecars declared before it; plus ``overhead``.
    ``overrides`` replaces single containers' requests (the webhook's originals).
    """
    overrides = overrides or {}
    overhead_raw = (spec.get("overhead") or {}).get("cpu")
    overhead = 0 if overhead_raw is None else cpu_millicores(overhead_raw)
    pod_level = ((spec.get("resources") or {}).get("requests") or {}).get("cpu")
    if pod_level is not None:
        return cpu_millicores(pod_level) + overhead

    def value(list_key: str, container: Mapping[str, Any]) -> int:
        key = (list_key, str(container.get("name", "")))
        request = overrides[key] if key in overrides else _request(container)
        return request or 0

    app_total = sum(value("containers", c) for c in spec.get("containers") or [])
    sidecars = 0
    init_peak = 0
    for container in spec.get("initContainers") or []:
        request = value("initContainers", container)
        if container.get("restartPolicy") == "Always":
            sidecars += request
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + request)
    return max(app_total + sidecars, init_peak) + overhead


def original_overrides(raw: str) -> ContainerRequests:
    """Parse ``temper.codes/original-requests`` into container request overrides."""
    originals = annotations.OriginalRequests.decode(raw)
    result: ContainerRequests = {}
    for list_key, section in (
        ("containers", originals.containers),
        ("initContainers", originals.init_containers),
    ):
        for name, quantity in section.items():
            try:
                result[(list_key, name)] = None if quantity is None else cpu_millicores(quantity)
            except InvalidQuantityError as error:
                raise InvalidAnnotationError(
                    f"annotation {annotations.ORIGINAL_REQUESTS}: container {name!r} has {error}"
                ) from error
    return result


# -- recommendations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """The fields of ``temper.codes/recommendation`` that the savings view reads."""

    status: str
    computed_at_seconds: float
    requests_millicores: dict[str, int]


def parse_recommendation(raw: str) -> Recommendation:
    """Parse the rightsizer's annotation (schema version 1) for its status and requests."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidAnnotationError(
            f"annotation {annotations.RECOMMENDATION}={raw[:200]!r} is not valid JSON: {error}"
        ) from error
    version = data.get("v") if isinstance(data, dict) else None
    if version != RECOMMENDATION_VERSION:
        raise InvalidAnnotationError(
            f"annotation {annotations.RECOMMENDATION}: schema version v={version!r} is not "
            f"supported, expected {RECOMMENDATION_VERSION}; run `temper rightsize recommend`"
        )
    status = data.get("status")
    containers = data.get("containers")
    timestamp = data.get("ts")
    problem = None
    if status not in RECOMMENDATION_STATUSES:
        problem = f"status {status!r} is not one of {', '.join(RECOMMENDATION_STATUSES)}"
    elif not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        problem = f"ts {timestamp!r} is not Unix seconds"
    elif not isinstance(containers, dict):
        problem = f"containers {containers!r} is not an object"
    else:
        for name, advice in containers.items():
            request = advice.get("req_m") if isinstance(advice, dict) else None
            if not isinstance(request, int) or isinstance(request, bool) or request < 0:
                problem = f"containers.{name}.req_m is {request!r}, expected millicores >= 0"
                break
    if problem is not None:
        raise InvalidAnnotationError(
            f"annotation {annotations.RECOMMENDATION}: {problem}; run "
            "`temper rightsize recommend` again"
        )
    assert isinstance(containers, dict) and isinstance(timestamp, int | float)
    return Recommendation(
        status=str(status),
        computed_at_seconds=float(timestamp),
        requests_millicores={str(name): int(a["req_m"]) for name, a in containers.items()},
    )


# -- owners -----------------------------------------------------------------------------------


def controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return (kind, name) of the object's controller owner reference, or None."""
    for reference in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("kind", "")), str(reference.get("name", ""))
    return None


WorkloadKey = tuple[str, str, str]  # (namespace, kind, name)

# Controllers followed one level further up, as the rightsizer does.
_PARENT_KINDS = {"ReplicaSet": "Deployment", "Job": "CronJob"}


def workload_of(pod: Mapping[str, Any], workloads: Mapping[str, Mapping[str, Any]]) -> WorkloadKey:
    """Return the workload that owns ``pod``: its controller, followed from ReplicaSet to
    Deployment and from Job to CronJob; a pod without a controller is its own workload."""
    metadata = pod.get("metadata") or {}
    namespace = str(metadata.get("namespace", ""))
    owner = controller(pod)
    if owner is None:
        return namespace, "Pod", str(metadata.get("name", ""))
    kind, name = owner
    parent_kind = _PARENT_KINDS.get(kind)
    if parent_kind is not None:
        parent = controller((workloads.get(kind) or {}).get(f"{namespace}/{name}") or {})
        if parent is not None and parent[0] == parent_kind:
            return namespace, parent_kind, parent[1]
    return namespace, kind, name


# -- accumulation -----------------------------------------------------------------------------


@dataclass
class Measure:
    """CPU millicores with their hourly price; the unpriced part is kept apart."""

    cpu_millicores: int = 0
    priced_per_hour: float = 0.0
    unpriced_cpu_millicores: int = 0
    pods: int = 0

    def add(self, millicores: int, price: Price) -> None:
        """Add ``millicores`` priced at ``price`` (counted as unpriced without one)."""
        self.cpu_millicores += millicores
        amount = price.cpu_per_hour(millicores)
        if amount is None:
            self.unpriced_cpu_millicores += millicores
        else:
            self.priced_per_hour += amount

    def merge(self, other: "Measure") -> None:
        """Add another measure to this one."""
        self.cpu_millicores += other.cpu_millicores
        self.priced_per_hour += other.priced_per_hour
        self.unpriced_cpu_millicores += other.unpriced_cpu_millicores
        self.pods += other.pods

    def to_json(self, priced: bool) -> dict[str, Any]:
        """Return the API form; money is null when no price table is configured."""
        per_hour = self.priced_per_hour if priced else None
        return {
            "cpuMillicores": self.cpu_millicores,
            "perHour": prices.rounded(per_hour),
            "perMonth": prices.rounded(prices.per_month(per_hour)),
            "unpricedCpuMillicores": self.unpriced_cpu_millicores,
            "pods": self.pods,
        }


@dataclass
class WorkloadSavings:
    """Realized reclaim and opportunity of one workload."""

    key: WorkloadKey
    realized: Measure = field(default_factory=Measure)
    opportunity: Measure = field(default_factory=Measure)
    under_provisioned_millicores: int = 0
    recommendation: dict[str, Any] | None = None


@dataclass
class Problem:
    """An object the report skipped, and why."""

    object: str
    error: str


@dataclass
class Snapshot:
    """The cached objects a report is computed from, keyed as the reflectors key them."""

    nodes: Mapping[str, Mapping[str, Any]]
    pods: Mapping[str, Mapping[str, Any]]
    workloads: Mapping[str, Mapping[str, Mapping[str, Any]]]


class _Report:
    """One computation of the report; ``build`` returns the API body."""

    def __init__(self, snapshot: Snapshot, table: PriceTable | None) -> None:
        self.snapshot = snapshot
        self.table = table
        self.machine_types: dict[str, str | None] = {
            name: prices.node_machine_type(node) for name, node in snapshot.nodes.items()
        }
        self.workloads: dict[WorkloadKey, WorkloadSavings] = {}
        self.pods_by_workload: dict[WorkloadKey, list[Mapping[str, Any]]] = defaultdict(list)
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.recommendations = 0
        self.dismissed = 0
        # (original, current) effective requests: of the DaemonSet and mirror pods per Node
        # name, and of the other bound pods per machine type.
        self.fixed: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.movable: dict[str | None, list[tuple[int, int]]] = defaultdict(list)

    def problem(self, obj: str, error: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(obj, error))

    def price_of_node(self, node: str | None) -> Price:
        if node is None or node not in self.machine_types:
            # A pending pod, or a Node the cache does not have yet: the default price.
            return prices.lookup(self.table, None)
        return prices.lookup(self.table, self.machine_types[node])

    def entry(self, key: WorkloadKey) -> WorkloadSavings:
        return self.workloads.setdefault(key, WorkloadSavings(key))

    # Realized reclaim: every live pod, and its place in the node packing.
    def add_pod(self, pod: Mapping[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        spec = pod.get("spec") or {}
        pod_annotations = metadata.get("annotations") or {}
        key = workload_of(pod, self.snapshot.workloads)
        self.pods_by_workload[key].append(pod)
        try:
            current = effective_request_millicores(spec)
            raw = pod_annotations.get(annotations.ORIGINAL_REQUESTS)
            original = current
            if raw is not None:
                original = effective_request_millicores(spec, original_overrides(raw))
        except (InvalidAnnotationError, InvalidQuantityError) as error:
            self.problem(f"pod {object_key(pod)}", str(error))
            return
        node = spec.get("nodeName")
        if raw is not None:
            measure = self.entry(key).realized
            measure.add(original - current, self.price_of_node(node))
            measure.pods += 1
        if node is None or node not in self.machine_types:
            return
        if MIRROR_POD_ANNOTATION in pod_annotations or key[1] == "DaemonSet":
            self.fixed[node].append((original, current))
        else:
            self.movable[self.machine_types[node]].append((original, current))

    # Identified opportunity: workloads with a recommendation that is not dismissed.
    def add_recommendation(self, key: WorkloadKey, obj: Mapping[str, Any], kind: str) -> None:
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(annotations.RECOMMENDATION)
        if raw is None:
            return
        self.recommendations += 1
        where = f"{kind.lower()} {key[0]}/{key[2]}"
        entry = self.entry(key)
        try:
            recommendation = parse_recommendation(raw)
            template = self._template_requests(obj, kind)
        except (InvalidAnnotationError, InvalidQuantityError) as error:
            self.problem(where, str(error))
            entry.recommendation = {"status": None, "error": str(error)}
            return
        applied = all(
            template.get(name) == request
            for name, request in recommendation.requests_millicores.items()
        )
        entry.recommendation = {
            "status": recommendation.status,
            "computedAtSeconds": recommendation.computed_at_seconds,
            "applied": applied,
            "containers": [
                {
                    "name": name,
                    "recommendedRequestMillicores": request,
                    "templateRequestMillicores": template.get(name),
                }
                for name, request in sorted(recommendation.requests_millicores.items())
            ],
            "error": None,
        }
        if recommendation.status == "dismissed":
            self.dismissed += 1
            return
        self._add_opportunity(entry, recommendation)

    @staticmethod
    def _template_requests(obj: Mapping[str, Any], kind: str) -> dict[str, int | None]:
        spec = (obj.get("spec") or {}) if kind == "Pod" else (obj.get("template") or {})
        if kind != "Pod":
            spec = spec.get("spec") or {}
        return {
            name: request
            for (list_key, name), request in container_requests(spec).items()
            if list_key == "containers"
        }

    def _add_opportunity(self, entry: WorkloadSavings, recommendation: Recommendation) -> None:
        for pod in self.pods_by_workload.get(entry.key, []):
            spec = pod.get("spec") or {}
            try:
                requests = container_requests(spec)
            except InvalidQuantityError as error:
                self.problem(f"pod {object_key(pod)}", str(error))
                continue
            price = self.price_of_node(spec.get("nodeName"))
            counted = False
            for name, recommended in recommendation.requests_millicores.items():
                if ("containers", name) not in requests:
                    continue
                counted = True
                delta = (requests[("containers", name)] or 0) - recommended
                if delta > 0:
                    entry.opportunity.add(delta, price)
                else:
                    entry.under_provisioned_millicores -= delta
            entry.opportunity.pods += int(counted)

    def node_savings(self) -> dict[str, Any]:
        """Pack every machine type's movable pods with original and current requests."""
        groups: dict[str | None, list[str]] = defaultdict(list)
        for name, machine_type in self.machine_types.items():
            groups[machine_type].append(name)
        rows = []
        freed_total = 0
        priced_total = 0.0
        unpriced_freed = 0
        for machine_type in sorted(groups, key=lambda t: (t is None, t or "")):
            names = groups[machine_type]
            needed = {}
            for index, scenario in enumerate(("original", "current")):
                bins = []
                for name in names:
                    fixed = sum(requests[index] for requests in self.fixed[name])
                    bins.append(packing.Bin(name, self._capacity(name) - fixed))
                requests = [p[index] for p in self.movable.get(machine_type, [])]
                needed[scenario] = packing.nodes_needed(bins, requests)
            freed = needed["original"] - needed["current"]
            price = prices.lookup(self.table, machine_type)
            per_hour = price.nodes_per_hour(freed)
            freed_total += freed
            if per_hour is None:
                unpriced_freed += freed
            else:
                priced_total += per_hour
            rows.append(
                {
                    "machineType": machine_type,
                    "nodes": len(names),
                    "priceSource": price.source.value,
                    "price": None if price.price is None else price.price.to_json(),
                    "nodesNeededOriginal": needed["original"],
                    "nodesNeededCurrent": needed["current"],
                    "nodesFreed": freed,
                    "perHour": prices.rounded(per_hour),
                    "perMonth": prices.rounded(prices.per_month(per_hour)),
                }
            )
        total_per_hour = priced_total if self.table is not None else None
        return {
            "nodesFreed": freed_total,
            "perHour": prices.rounded(total_per_hour),
            "perMonth": prices.rounded(prices.per_month(total_per_hour)),
            "unpricedNodesFreed": unpriced_freed,
            "machineTypes": rows,
        }

    def _capacity(self, node: str) -> int:
        raw = ((self.snapshot.nodes[node].get("status") or {}).get("allocatable") or {}).get("cpu")
        if raw is None:
            return 0
        try:
            return cpu_millicores(raw)
        except InvalidQuantityError as error:
            self.problem(f"node {node}", f"allocatable cpu: {error}")
            return 0


def compute(snapshot: Snapshot, table: PriceTable | None) -> "SavingsReport":
    """Compute the report for every namespace; ``body`` then narrows it to one."""
    report = _Report(snapshot, table)
    for pod in snapshot.pods.values():
        report.add_pod(pod)
    for kind, objects in snapshot.workloads.items():
        for obj in objects.values():
            metadata = obj.get("metadata") or {}
            key = (str(metadata.get("namespace", "")), kind, str(metadata.get("name", "")))
            report.add_recommendation(key, obj, kind)
    for pod in snapshot.pods.values():
        if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue
        metadata = pod.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), "Pod", str(metadata.get("name", "")))
        report.add_recommendation(key, pod, "Pod")
    return SavingsReport(report, report.node_savings())


@dataclass
class SavingsReport:
    """A computed report; ``body`` renders it for one namespace or all."""

    report: _Report
    nodes: dict[str, Any]

    def body(self, namespace: str | None, book: PriceBook) -> dict[str, Any]:
        """Return the API body, narrowed to ``namespace`` when given."""
        report = self.report
        priced = report.table is not None
        namespaces: dict[str, list[WorkloadSavings]] = defaultdict(list)
        for key in sorted(report.workloads):
            if namespace is None or key[0] == namespace:
                namespaces[key[0]].append(report.workloads[key])
        realized_total, opportunity_total = Measure(), Measure()
        under_total = 0
        items = []
        for name in sorted(namespaces):
            realized, opportunity = Measure(), Measure()
            under = 0
            workloads = []
            for entry in namespaces[name]:
                realized.merge(entry.realized)
                opportunity.merge(entry.opportunity)
                under += entry.under_provisioned_millicores
                workloads.append(_workload_json(entry, priced))
            realized_total.merge(realized)
            opportunity_total.merge(opportunity)
            under_total += under
            item: dict[str, Any] = {
                "namespace": name,
                "realized": realized.to_json(priced),
                "opportunity": {
                    **opportunity.to_json(priced),
                    "underProvisionedCpuMillicores": under,
                },
                "workloads": workloads,
            }
            items.append(item)
        return {
            "pricing": {
                "configured": priced,
                "path": None if book.path is None else str(book.path),
                "currency": report.table.currency if report.table is not None else None,
                "hoursPerMonth": prices.HOURS_PER_MONTH,
                "error": book.error,
            },
            "namespace": namespace,
            "realized": {"cpu": realized_total.to_json(priced), "nodes": self.nodes},
            "opportunity": {
                "cpu": {
                    **opportunity_total.to_json(priced),
                    "underProvisionedCpuMillicores": under_total,
                },
                "recommendations": report.recommendations,
                "dismissedRecommendations": report.dismissed,
            },
            "namespaces": items,
            "problems": [{"object": p.object, "error": p.error} for p in report.problems],
            "problemCount": report.problem_count,
        }


def _workload_json(entry: WorkloadSavings, priced: bool) -> dict[str, Any]:
    namespace, kind, name = entry.key
    return {
        "namespace": namespace,
        "kind": kind,
        "name": name,
        "realized": entry.realized.to_json(priced),
        "opportunity": {
            **entry.opportunity.to_json(priced),
            "underProvisionedCpuMillicores": entry.under_provisioned_millicores,
        },
        "recommendation": entry.recommendation,
    }
