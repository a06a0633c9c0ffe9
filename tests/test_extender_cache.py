"""The extender's node cache, fed over HTTP by a fake API server, and its object reductions."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from extender.cache import NodeCache, reduce_node, reduce_pod, scheduled_at_seconds
from extender.scoring import pod_demand
from extender.service import freeze_after_first_lists
from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.kube import JsonObject, object_key
from temper.tiers import Tier
from tests.fakeapiserver import FakeApiServer, FakeCollection, object_list, serve, wait_until

# 2027-01-15T08:00:00Z
VALUE_TIME = 1_800_000_000.0
NORMAL = Tier.NORMAL.rank
CRITICAL = Tier.CRITICAL.rank


def tier_load(timestamp: float, normal: int, critical: int = 0) -> str:
    return TierLoad(
        timestamp_seconds=timestamp,
        node_cpu_millicores=4000,
        tiers={
            Tier.NORMAL: TierLoadEntry(protection_capacity_millicores=normal),
            Tier.CRITICAL: TierLoadEntry(protection_capacity_millicores=critical),
        },
    ).encode()


def node(name: str, value: str | None) -> JsonObject:
    annotations = {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd.sock"}
    if value is not None:
        annotations[TIER_LOAD] = value
    return {
        "metadata": {"name": name, "resourceVersion": "1", "annotations": annotations},
        "status": {"images": [{"names": ["registry.invalid/big:1"], "sizeBytes": 1}]},
    }


def pod(
    name: str,
    node_name: str,
    cpu: str,
    scheduled: str,
    priority_class: str | None = None,
) -> JsonObject:
    spec: dict[str, Any] = {
        "nodeName": node_name,
        "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}],
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}
            ],
        },
    }


BEFORE_VALUE = "2027-01-15T07:59:00Z"
AFTER_VALUE = "2027-01-15T08:00:05Z"


@asynccontextmanager
async def running_cache(fake: FakeApiServer) -> AsyncIterator[NodeCache]:
    async with serve(fake) as client:
        cache = NodeCache(client)
        task = asyncio.create_task(cache.run())
        try:
            await wait_until(cache.ready)
            yield cache
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def free(cache: NodeCache, name: str, rank: int) -> int | None:
    capacity = cache.capacities.get(name)
    return None if capacity is None else capacity.free_millicores[rank]


async def test_cache_subtracts_pods_bound_after_value() -> None:
    fake = FakeApiServer()
    nodes = fake.add(
        "/api/v1/nodes",
        FakeCollection(lists=[object_list("5", [node("n1", tier_load(VALUE_TIME, 2000, 800))])]),
    )
    pods = fake.add(
        "/api/v1/pods",
        FakeCollection(
            lists=[
                object_list(
                    "5",
                    [
                        pod("old", "n1", "500m", BEFORE_VALUE),
                        pod("new", "n1", "300m", AFTER_VALUE),
                        pod("new-critical", "n1", "200m", AFTER_VALUE, "temper-critical"),
                    ],
                )
            ]
        ),
    )

    async with running_cache(fake) as cache:
        # Only the pods bound after the value count; a critical pod counts for normal too.
        assert free(cache, "n1", NORMAL) == 1500
        assert free(cache, "n1", CRITICAL) == 600

        pods.events.put_nowait({"type": "DELETED", "object": pod("new", "n1", "300m", "")})
        await wait_until(lambda: free(cache, "n1", NORMAL) == 1800)

        # A newer value already includes every pod bound so far.
        newer = node("n1", tier_load(VALUE_TIME + 60, 1000, 800))
        nodes.events.put_nowait({"type": "MODIFIED", "object": newer})
        await wait_until(lambda: free(cache, "n1", NORMAL) == 1000)
        assert free(cache, "n1", CRITICAL) == 800


async def test_cache_forgets_node_without_valid_value() -> None:
    fake = FakeApiServer()
    value = tier_load(VALUE_TIME, 2000)
    listed = [node("valid", value), node("bare", None)]
    nodes = fake.add("/api/v1/nodes", FakeCollection(lists=[object_list("5", listed)]))
    fake.add("/api/v1/pods", FakeCollection(lists=[object_list("5", [])]))

    async with running_cache(fake) as cache:
        assert sorted(cache.capacities) == ["valid"]

        nodes.events.put_nowait({"type": "MODIFIED", "object": node("valid", "{garbage")})
        await wait_until(lambda: "valid" not in cache.capacities)

        nodes.events.put_nowait({"type": "MODIFIED", "object": node("bare", value)})
        await wait_until(lambda: "bare" in cache.capacities)
        nodes.events.put_nowait({"type": "DELETED", "object": node("bare", None)})
        await wait_until(lambda: not cache.capacities)


async def test_request_annotations_reuse_cached_capacity() -> None:
    # Full-object mode: the text that the cache contains gives the cached capacity. Any other
    # text is parsed and combined with the node's bound pods.
    fake = FakeApiServer()
    cached_value = tier_load(VALUE_TIME, 2000)
    fake.add("/api/v1/nodes", FakeCollection(lists=[object_list("5", [node("n1", cached_value)])]))
    fake.add(
        "/api/v1/pods",
        FakeCollection(lists=[object_list("5", [pod("new", "n1", "300m", AFTER_VALUE)])]),
    )

    async with running_cache(fake) as cache:
        cached = cache.capacity_from_annotations("n1", {TIER_LOAD: cached_value})
        assert cached is cache.capacities["n1"]
        assert cached.free_millicores[NORMAL] == 1700

        other = cache.capacity_from_annotations("n1", {TIER_LOAD: tier_load(VALUE_TIME, 900)})
        assert other is not None
        assert other.free_millicores[NORMAL] == 600
        unknown = cache.capacity_from_annotations("n2", {TIER_LOAD: tier_load(VALUE_TIME, 900)})
        assert unknown is not None
        assert unknown.free_millicores[NORMAL] == 900
        assert cache.capacity_from_annotations("n1", {TIER_LOAD: "{garbage"}) is None
        assert cache.capacity_from_annotations("n1", None) is None


async def test_freeze_waits_for_first_lists() -> None:
    fake = FakeApiServer()
    fake.add("/api/v1/nodes", FakeCollection(lists=[object_list("5", [node("n1", None)])]))
    fake.add("/api/v1/pods", FakeCollection(lists=[object_list("5", [])]))
    assert gc.get_freeze_count() == 0
    async with serve(fake) as client:
        cache = NodeCache(client)
        freeze = asyncio.create_task(freeze_after_first_lists(cache))
        await asyncio.sleep(0.1)
        # Nothing is frozen before the lists are loaded.
        assert not freeze.done()
        assert gc.get_freeze_count() == 0

        run = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(freeze, timeout=30)
            assert cache.ready()
            assert gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


def container(cpu: str | None, *, sidecar: bool = False) -> JsonObject:
    result: JsonObject = {
        "name": "c",
        "image": "registry.invalid/app:1",
        "env": [{"name": "MODE", "value": "x" * 100}],
        "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}} if cpu else {},
    }
    if sidecar:
        result["restartPolicy"] = "Always"
    return result


REDUCE_CASES = [
    {"containers": [container("250m"), container("1")], "priorityClassName": "temper-high"},
    {"containers": [container(None)], "priority": 100_000},
    {},
    {"containers": [container("500m")], "initContainers": [container("2")]},
    {
        "containers": [container("500m")],
        "initContainers": [container("200m", sidecar=True), container("1")],
    },
    {"containers": [container("500m")], "overhead": {"cpu": "100m"}},
    {"containers": [container("500m")], "resources": {"requests": {"cpu": "3"}}},
    {"containers": "not a list", "priorityClassName": "system-node-critical"},
]


@pytest.mark.parametrize("spec", REDUCE_CASES)
def test_reduce_pod_keeps_what_cache_reads(spec: JsonObject) -> None:
    full = {
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {**spec, "nodeName": "n1", "volumes": [{"name": "data"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": AFTER_VALUE},
            ],
        },
    }
    reduced = reduce_pod(full)
    assert pod_demand(reduced) == pod_demand(full)
    assert scheduled_at_seconds(reduced) == scheduled_at_seconds(full)
    assert object_key(reduced) == "shop/web"
    assert reduced["spec"]["nodeName"] == "n1"
    assert reduced["status"]["phase"] == "Running"
    assert "volumes" not in reduced["spec"]
    assert "podIP" not in reduced["status"]


def test_reduce_node_keeps_name_and_tier_load() -> None:
    value = tier_load(VALUE_TIME, 2000)
    assert reduce_node(node("n1", value)) == {
        "metadata": {"name": "n1", "annotations": {TIER_LOAD: value}}
    }
    assert reduce_node(node("n2", None)) == {"metadata": {"name": "n2"}}
