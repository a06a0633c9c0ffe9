"""The rightsizer's commands: collect, recommend (and report), accept or dismiss.

Recommendations are written only as the ``temper.codes/recommendation`` annotation on the
owning workload; nothing here changes a pod template.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from rightsizer.annotation import Status, WorkloadRecommendation
from rightsizer.collector import Collector
from rightsizer.history import ContainerHistory
from rightsizer.owners import OwnerResolver, Workload
from rightsizer.recommend import ContainerRecommendation, RecommendationPolicy, recommend_container
from rightsizer.settings import RightsizerSettings
from rightsizer.store import HistoryStore
from rightsizer.workloads import merge
from temper.annotations import RECOMMENDATION
from temper.errors import InvalidAnnotationError, KubernetesError, TemperError
from temper.kube import JsonObject, KubeClient

log = logging.getLogger(__name__)


class NoRecommendationError(TemperError):
    """A workload has no recommendation annotation to accept or dismiss."""


@dataclass
class WorkloadEntry:
    """One workload's fresh recommendation and the pod-level inputs behind it."""

    workload: Workload
    recommendation: WorkloadRecommendation
    pod_recommendations: list[ContainerRecommendation] = field(default_factory=list)
    histories: list[ContainerHistory] = field(default_factory=list)
    previous: WorkloadRecommendation | None = None  # the annotation the workload carried


def policy_from(settings: RightsizerSettings) -> RecommendationPolicy:
    """Return the recommendation policy the settings describe."""
    return RecommendationPolicy(
        window_seconds=settings.window_hours * 3600,
        target_above_ratio=settings.target_seconds_above_ratio,
        margin_fraction=settings.margin_fraction,
        reaction_seconds=settings.reaction_minutes * 60,
        apply_interval_seconds=settings.apply_interval_minutes * 60,
        level_seconds=settings.level_minutes * 60,
        min_cpu_millicores=settings.min_cpu_millicores,
        recommend_limits=settings.recommend_limits,
    )


async def collect(
    settings: RightsizerSettings, stop: asyncio.Event, ticks: int | None = None
) -> int:
    """Collect until ``stop`` is set or ``ticks`` ticks have run; return the rows written."""
    if not settings.observe_urls:
        raise TemperError(
            "no agent to collect from: pass --observe-urls URL (repeat it for each agent) or "
            "set TEMPER_RIGHTSIZE_OBSERVE_URLS to a comma-separated list"
        )
    store = HistoryStore(settings.history_path)
    try:
        collector = Collector(
            urls=list(settings.observe_urls),
            store=store,
            interval_seconds=settings.collect_interval_seconds,
            timeout_seconds=settings.request_timeout_seconds,
            retention_days=settings.retention_days,
        )
        await collector.run(stop, ticks=ticks)
        return collector.rows_written
    finally:
        store.close()


def existing_recommendation(obj: JsonObject, workload: Workload) -> WorkloadRecommendation | None:
    """Return the annotation already on a workload object, or None if absent or invalid."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(RECOMMENDATION)
    if raw is None:
        return None
    try:
        return WorkloadRecommendation.decode(raw)
    except InvalidAnnotationError as error:
        log.warning(
            "existing recommendation annotation is invalid and will be replaced",
            extra={"workload": str(workload), "error": str(error)},
        )
        return None


async def _owner(
    resolver: OwnerResolver, store: HistoryStore, pod: ContainerRecommendation
) -> Workload | None:
    key = pod.key
    remembered = store.owner(key.pod_uid)
    if remembered is not None:
        return Workload(remembered[0], key.namespace, remembered[1])
    workload = await resolver.owner_of_pod(key.namespace, key.pod)
    if workload is not None:
        store.remember_owner(key.pod_uid, workload.kind, workload.name)
    return workload


async def compute(
    settings: RightsizerSettings,
    client: KubeClient,
    store: HistoryStore,
    *,
    namespaces: Collection[str] | None = None,
    include: Callable[[Workload, JsonObject], bool] | None = None,
) -> list[WorkloadEntry]:
    """Recommend for every workload with history in the window ending at the newest data.

    ``namespaces`` limits the history read to pods in those namespaces; ``include``, called
    with each workload and its object, limits the result further.
    """
    latest = store.latest_seconds()
    if latest is None:
        return []

    policy = policy_from(settings)
    resolver = OwnerResolver(client)
    grouped: dict[Workload, WorkloadEntry] = {}
    pending: dict[Workload, list[ContainerRecommendation]] = {}
    histories: dict[Workload, list[ContainerHistory]] = {}
    for key in store.containers(latest - policy.window_seconds):
        if namespaces is not None and key.namespace not in namespaces:
            continue
        if not key.container:
            # Without a name the recommendation cannot be matched to the pod template.
            log.info("container name unknown, history skipped", extra={"container": str(key)})
            continue
        history = store.load(key, latest - policy.window_seconds, latest)
        if history.intervals == 0:
            continue
        recommendation = recommend_container(history, policy, latest)
        workload = await _owner(resolver, store, recommendation)
        if workload is None:
            log.info(
                "pod no longer exists and its owner is unknown, history skipped",
                extra={"container": str(key)},
            )
            continue
        pending.setdefault(workload, []).append(recommendation)
        histories.setdefault(workload, []).append(history)

    now = time.time()
    for workload, items in sorted(pending.items()):
        try:
            obj = await client.get(workload.path)
        except KubernetesError as error:
            if error.status != 404:
                raise
            log.info("workload no longer exists, skipped", extra={"workload": str(workload)})
            continue
        if include is not None and not include(workload, obj):
            continue
        fresh = merge(items, obj, workload.kind, now, policy.apply_interval_seconds)
        previous = existing_recommendation(obj, workload)
        if (
            previous is not None
            and previous.status is not Status.PROPOSED
            and previous.same_values(fresh)
        ):
            fresh = fresh.decide(previous.status, previous.decided_seconds or now, previous.note)
        grouped[workload] = WorkloadEntry(workload, fresh, items, histories[workload], previous)
    return list(grouped.values())


async def write_annotation(
    client: KubeClient, workload: Workload, recommendation: WorkloadRecommendation
) -> None:
    """Set the recommendation annotation on the workload with a JSON merge patch."""
    patch = {"metadata": {"annotations": {RECOMMENDATION: recommendation.encode()}}}
    await client.merge_patch(workload.path, patch)
    log.info(
        "recommendation written",
        extra={"workload": str(workload), "status": recommendation.status.value},
    )


async def recommend(settings: RightsizerSettings, write: bool) -> list[WorkloadEntry]:
    """Compute every workload's recommendation and, if ``write``, annotate the workloads."""
    store = HistoryStore.open_existing(settings.history_path)
    try:
        if store.latest_seconds() is None:
            log.info("history is empty, nothing to recommend", extra={"path": store.path})
            return []
        client = await KubeClient.connect(settings.kubeconfig)
        try:
            entries = await compute(settings, client, store)
            if write:
                for entry in entries:
                    await write_annotation(client, entry.workload, entry.recommendation)
            return entries
        finally:
            await client.close()
    finally:
        store.close()


async def decide(
    settings: RightsizerSettings, workload: Workload, status: Status, note: str | None
) -> WorkloadRecommendation:
    """Record a review decision on the workload's recommendation annotation."""
    client = await KubeClient.connect(settings.kubeconfig)
    try:
        obj = await client.get(workload.path)
        current = existing_recommendation(obj, workload)
        if current is None:
            raise NoRecommendationError(
                f"{workload} has no valid {RECOMMENDATION} annotation; run "
                "`temper rightsize recommend` first"
            )
        decided = current.decide(status, time.time(), note)
        await write_annotation(client, workload, decided)
        return decided
    finally:
        await client.close()
