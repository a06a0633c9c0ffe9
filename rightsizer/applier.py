"""One pass of ``temper rightsize apply``: opted-in pods resized in place to the tracking request.

A pass:

1. finds the opted-in scope: Namespaces and workload objects (Deployment, StatefulSet,
   DaemonSet, ReplicaSet, Job, CronJob, or a Pod without a controller) that carry the label
   ``temper.codes/rightsize-apply``. ``tracking`` opts in, ``off`` opts out, and a
   workload's own label wins over its namespace's;
2. refreshes the recommendations of the opted-in workloads from the history and writes
   their annotations, as ``recommend`` does. A dismissed recommendation is left as the
   reviewer left it;
3. plans every pod of those workloads (:mod:`rightsizer.resizeplan`);
4. resizes at most ``apply_max_resized_pods`` pods, increases first, and records
   each resize: a log line per container, metrics, the ``temper.codes/rightsize-applied``
   annotation and an Event on the pod.

With ``apply_tracking_enabled`` false, a pass only plans: it writes no annotation, resizes
nothing and posts no Event. The pod template is never changed, so a rollout brings back
the template's request.
"""

import logging
import socket
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from rightsizer.annotation import Status, WorkloadRecommendation
from rightsizer.owners import WORKLOAD_KINDS, OwnerResolver, Workload
from rightsizer.resizeplan import (
    ApplyPolicy,
    PodPlan,
    Skip,
    SkipReason,
    label_problem,
    opted_in,
    plan_pod,
)
from rightsizer.resizer import (
    REASON_APPLIED,
    REASON_FAILED,
    change_note,
    classify_failure,
    describe_failure,
    post_event,
    record_on_pod,
    resize_pod,
)
from rightsizer.service import compute, existing_recommendation, write_annotation
from rightsizer.settings import RightsizerSettings
from rightsizer.store import HistoryStore
from temper.annotations import RIGHTSIZE_APPLIED, RIGHTSIZE_APPLY_LABEL
from temper.errors import KubernetesError
from temper.kube import JsonObject, KubeClient, status_message

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500


class ApplyMetrics:
    """Prometheus metrics of the applier, in a registry of its own; labels stay bounded."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter(
            "temper_rightsize_apply_passes_total",
            "Apply passes run, dry runs included",
            registry=self.registry,
        )
        self.pass_failures = Counter(
            "temper_rightsize_apply_pass_failures_total",
            "Apply passes that stopped on an API server error; the next interval retries",
            registry=self.registry,
        )
        self.resized_containers = Counter(
            "temper_rightsize_resized_containers_total",
            "Containers whose CPU request the applier changed in place, by direction (up, down)",
            ["direction"],
            registry=self.registry,
        )
        self.resized_pods = Counter(
            "temper_rightsize_resized_pods_total",
            "Pods resized in place through pods/resize",
            registry=self.registry,
        )
        self.skips = Counter(
            "temper_rightsize_resize_skips_total",
            "Opted-in pods (or their containers) left unchanged in a pass, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.failures = Counter(
            "temper_rightsize_resize_failures_total",
            "Resizes the API server rejected, by kind (conflict, rejected, forbidden, "
            "not-found, error)",
            ["reason"],
            registry=self.registry,
        )
        self.record_failures = Counter(
            "temper_rightsize_record_failures_total",
            "Resizes whose annotation or Event could not be written, by what failed",
            ["what"],
            registry=self.registry,
        )
        self.refresh_failures = Counter(
            "temper_rightsize_refresh_failures_total",
            "Failed refreshes of the opted-in workloads' recommendations",
            registry=self.registry,
        )
        self.pending = Gauge(
            "temper_rightsize_resize_pending_pods",
            "Opted-in pods whose PodResizePending condition the kubelet set, by reason "
            "(Deferred, Infeasible), at the last pass",
            ["reason"],
            registry=self.registry,
        )
        self.last_pass = Gauge(
            "temper_rightsize_apply_last_pass_timestamp_seconds",
            "Unix time at which the last apply pass ended",
            registry=self.registry,
        )


class Action(StrEnum):
    """The action a pass took for one pod."""

    RESIZED = "resized"
    WOULD_RESIZE = "would resize"
    SKIPPED = "skipped"
    DEFERRED = "deferred"
    FAILED = "failed"


@dataclass
class PodOutcome:
    """One opted-in pod after a pass."""

    plan: PodPlan
    action: Action
    message: str = ""


@dataclass
class Scope:
    """The values of the opt-in label found on Namespaces and workload objects."""

    namespace_labels: dict[str, str] = field(default_factory=dict)
    workload_labels: dict[Workload, str] = field(default_factory=dict)

    def namespaces(self) -> set[str]:
        """Namespaces that may hold opted-in pods."""
        found = {ns for ns, value in self.namespace_labels.items() if opted_in(value, None)}
        found.update(
            workload.namespace
            for workload, value in self.workload_labels.items()
            if opted_in(None, value)
        )
        return found

    def includes(self, workload: Workload, obj: Mapping[str, Any]) -> bool:
        """Return whether the workload (``obj`` is its object) is opted in."""
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(RIGHTSIZE_APPLY_LABEL)
        return opted_in(self.namespace_labels.get(workload.namespace), value)


class TrackingApplier:
    """Runs apply passes against one API server; keeps state that spans passes."""

    def __init__(
        self,
        settings: RightsizerSettings,
        client: KubeClient,
        store: HistoryStore | None,
        metrics: ApplyMetrics | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.metrics = metrics or ApplyMetrics()
        self.instance = instance or socket.gethostname()
        self.policy = ApplyPolicy(
            hysteresis_fraction=settings.apply_hysteresis_fraction,
            min_cpu_millicores=settings.min_cpu_millicores,
        )
        # Problems seen in the last pass (invalid labels, PodResizePending conditions). A
        # problem is logged when it appears, not again while it stays.
        self._reported: set[tuple[str, ...]] = set()
        self._seen: set[tuple[str, ...]] = set()

    @property
    def enabled(self) -> bool:
        """Whether passes change anything (apply_tracking_enabled)."""
        return self.settings.apply_tracking_enabled

    # -- discovery -------------------------------------------------------------------------

    async def _list(self, path: str, params: Mapping[str, Any]) -> list[JsonObject]:
        items: list[JsonObject] = []
        token: str | None = None
        while True:
            query = {**params, "limit": LIST_PAGE_SIZE, "continue": token}
            page = await self.client.get(path, query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    def _first_seen(self, key: tuple[str, ...]) -> bool:
        self._seen.add(key)
        return key not in self._reported

    def _check_label(self, what: str, value: str) -> None:
        problem = label_problem(value)
        if problem is not None and self._first_seen(("label", what, value)):
            log.warning(
                "invalid opt-in label; set it to tracking or off, or remove it",
                extra={"object": what, "label": RIGHTSIZE_APPLY_LABEL, "problem": problem},
            )

    async def discover(self, resolver: OwnerResolver) -> Scope:
        """List the Namespaces and workload objects that carry the opt-in label."""
        scope = Scope()
        selector = {"labelSelector": RIGHTSIZE_APPLY_LABEL}
        for namespace in await self._list("/api/v1/namespaces", selector):
            name = str(namespace["metadata"]["name"])
            value = str(namespace["metadata"]["labels"][RIGHTSIZE_APPLY_LABEL])
            self._check_label(f"namespace/{name}", value)
            scope.namespace_labels[name] = value
        for kind, (group, resource, _template) in WORKLOAD_KINDS.items():
            for obj in await self._list(f"/{group}/{resource}", selector):
                metadata = obj["metadata"]
                workload = Workload(kind, str(metadata["namespace"]), str(metadata["name"]))
                # A pod's label counts only for a pod without a controller: the label of a
                # Deployment's pods comes from its template, not from the workload.
                if kind == "Pod" and await resolver.owner_of_object(obj) != workload:
                    continue
                value = str(metadata["labels"][RIGHTSIZE_APPLY_LABEL])
                self._check_label(str(workload), value)
                scope.workload_labels[workload] = value
        return scope

    # -- refresh ---------------------------------------------------------------------------

    async def refresh(self, scope: Scope) -> dict[Workload, WorkloadRecommendation]:
        """Recompute the opted-in workloads' recommendations; write them when enabled.

        Returns the fresh values, which a dry run uses in place of the annotations. Errors
        are logged and counted; the annotations then stay as they are and expire.
        """
        if self.store is None:
            return {}
        try:
            entries = await compute(
                self.settings,
                self.client,
                self.store,
                namespaces=scope.namespaces(),
                include=scope.includes,
            )
        except (KubernetesError, sqlite3.Error) as error:
            self.metrics.refresh_failures.inc()
            log.error(
                "refreshing the recommendations failed; annotations stay as they are",
                extra={"error": str(error), "history_path": self.store.path},
            )
            return {}
        fresh: dict[Workload, WorkloadRecommendation] = {}
        for entry in entries:
            if entry.previous is not None and entry.previous.status is Status.DISMISSED:
                continue
            if self.enabled:
                try:
                    await write_annotation(self.client, entry.workload, entry.recommendation)
                except KubernetesError as error:
                    self.metrics.refresh_failures.inc()
                    log.error(
                        "writing a refreshed recommendation failed",
                        extra={"workload": str(entry.workload), "error": status_message(error)},
                    )
                    continue
            fresh[entry.workload] = entry.recommendation
        return fresh

    # -- planning --------------------------------------------------------------------------

    async def _workload_object(
        self, workload: Workload, pod: JsonObject, cache: dict[Workload, JsonObject | None]
    ) -> JsonObject | None:
        if workload.kind == "Pod":
            return pod
        if workload not in cache:
            try:
                cache[workload] = await self.client.get(workload.path)
            except KubernetesError as error:
                if error.status != 404:
                    raise
                cache[workload] = None
        return cache[workload]

    def _report_pending(self, plan: PodPlan) -> None:
        if plan.pending is None:
            return
        key = ("pending", plan.uid, plan.pending.reason, plan.pending.message)
        if self._first_seen(key):
            log.warning(
                "the kubelet has not applied a resize",
                extra={
                    "pod": plan.pod,
                    "reason": plan.pending.reason,
                    "kubelet_message": plan.pending.message,
                },
            )

    async def plan(
        self,
        scope: Scope,
        fresh: Mapping[Workload, WorkloadRecommendation],
        resolver: OwnerResolver,
        now_seconds: float,
    ) -> list[tuple[PodPlan, str | None]]:
        """Plan every pod of the opted-in workloads; return each plan with its applied record."""
        plans: list[tuple[PodPlan, str | None]] = []
        objects: dict[Workload, JsonObject | None] = {}
        for namespace in sorted(scope.namespaces()):
            for pod in await self._list(f"/api/v1/namespaces/{namespace}/pods", {}):
                workload = await resolver.owner_of_object(pod)
                obj = await self._workload_object(workload, pod, objects)
                if obj is None or not scope.includes(workload, obj):
                    continue
                recommendation = fresh.get(workload) or existing_recommendation(obj, workload)
                plan = plan_pod(pod, workload, recommendation, self.policy, now_seconds)
                self._report_pending(plan)
                annotations = (pod.get("metadata") or {}).get("annotations") or {}
                plans.append((plan, annotations.get(RIGHTSIZE_APPLIED)))
        return plans

    # -- execution -------------------------------------------------------------------------

    async def _post_event(self, plan: PodPlan, *, warning: bool, reason: str, note: str) -> None:
        try:
            await post_event(
                self.client, plan, warning=warning, reason=reason, note=note, instance=self.instance
            )
        except KubernetesError as error:
            self.metrics.record_failures.labels("event").inc()
            log.warning(
                "posting an Event failed; grant create on events.k8s.io events",
                extra={"pod": plan.pod, "reason": reason, "error": status_message(error)},
            )

    async def execute(self, plan: PodPlan, applied_raw: str | None) -> PodOutcome:
        """Resize one pod as planned and record it; API errors become a FAILED outcome."""
        try:
            await resize_pod(self.client, plan)
        except KubernetesError as error:
            message = describe_failure(error)
            self.metrics.failures.labels(classify_failure(error).value).inc()
            log.warning(
                "in-place resize failed",
                extra={"pod": plan.pod, "workload": str(plan.workload), "error": message},
            )
            await self._post_event(
                plan, warning=True, reason=REASON_FAILED, note=f"{change_note(plan)}: {message}"
            )
            return PodOutcome(plan, Action.FAILED, message)

        self.metrics.resized_pods.inc()
        for change in plan.changes:
            direction = "up" if change.new_millicores > change.old_millicores else "down"
            self.metrics.resized_containers.labels(direction).inc()
            log.info(
                "CPU request resized in place to the tracking request",
                extra={
                    "pod": plan.pod,
                    "container": change.name,
                    "old_millicores": change.old_millicores,
                    "new_millicores": change.new_millicores,
                    "tracking_millicores": change.tracking_millicores,
                    "bound": change.bound.value if change.bound else None,
                    "workload": str(plan.workload),
                },
            )
        message = ""
        try:
            await record_on_pod(self.client, plan, applied_raw, time.time())
        except KubernetesError as error:
            self.metrics.record_failures.labels("annotation").inc()
            message = f"writing {RIGHTSIZE_APPLIED} failed: {status_message(error)}"
            log.warning(
                "resized, but the annotation could not be written",
                extra={"pod": plan.pod, "error": message},
            )
        await self._post_event(plan, warning=False, reason=REASON_APPLIED, note=change_note(plan))
        return PodOutcome(plan, Action.RESIZED, message)

    def _count(self, outcomes: list[PodOutcome]) -> None:
        pending: dict[str, int] = {"Deferred": 0, "Infeasible": 0}
        for outcome in outcomes:
            for skip in outcome.plan.skips:
                self.metrics.skips.labels(skip.reason.value).inc()
            if outcome.plan.pending is not None:
                reason = outcome.plan.pending.reason
                pending[reason] = pending.get(reason, 0) + 1
        for reason, count in pending.items():
            self.metrics.pending.labels(reason).set(count)

    async def run_pass(self, now_seconds: float | None = None) -> list[PodOutcome]:
        """Discover, refresh, plan and resize once; return one outcome per opted-in pod.

        Raises KubernetesError when listing fails; a failed resize is an outcome instead.
        """
        now = time.time() if now_seconds is None else now_seconds
        resolver = OwnerResolver(self.client)
        self._seen = set()
        scope = await self.discover(resolver)
        fresh = await self.refresh(scope)
        planned = await self.plan(scope, fresh, resolver, now)
        self._reported = self._seen

        outcomes: list[PodOutcome] = []
        candidates = sorted((p for p in planned if p[0].changes), key=lambda p: p[0].priority)
        limit = self.settings.apply_max_resized_pods
        for index, (plan, applied_raw) in enumerate(candidates):
            if index >= limit:
                reason = (
                    f"rate limit: {limit} pods are resized per interval "
                    "(apply_max_resized_pods); this one waits for the next"
                )
                plan.skips.append(Skip(None, SkipReason.RATE_LIMITED, reason))
                outcomes.append(PodOutcome(plan, Action.DEFERRED, reason))
            elif not self.enabled:
                note = change_note(plan)
                log.info("dry run: would resize", extra={"pod": plan.pod, "change": note})
                outcomes.append(PodOutcome(plan, Action.WOULD_RESIZE))
            else:
                outcomes.append(await self.execute(plan, applied_raw))
        outcomes.extend(PodOutcome(plan, Action.SKIPPED) for plan, _ in planned if not plan.changes)
        outcomes.sort(key=lambda o: (o.plan.namespace, o.plan.name))

        self._count(outcomes)
        self.metrics.passes.inc()
        self.metrics.last_pass.set(time.time())
        resized = sum(1 for o in outcomes if o.action is Action.RESIZED)
        log.info(
            "apply pass done" if self.enabled else "apply pass done (dry run, nothing changed)",
            extra={
                "pods": len(outcomes),
                "resized": resized,
                "would_resize": sum(1 for o in outcomes if o.action is Action.WOULD_RESIZE),
                "deferred": sum(1 for o in outcomes if o.action is Action.DEFERRED),
                "failed": sum(1 for o in outcomes if o.action is Action.FAILED),
            },
        )
        return outcomes
