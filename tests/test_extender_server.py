"""Extender HTTP API over real loopback HTTP, with a fake node cache behind it."""

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from extender.scoring import (
    CRITICAL_CAPACITY_EXCEEDED,
    NEUTRAL_SCORE,
    NodeCapacity,
    node_capacity,
)
from extender.server import build_app
from extender.settings import ExtenderSettings
from extender.table import CapacityTable
from temper.annotations import TIER_LOAD, TierLoad, TierLoadEntry
from temper.errors import InvalidAnnotationError
from temper.tiers import Tier

NOW = 1_800_000_000.0
MAX_REQUEST_BYTES = 64 * 1024
SETTINGS = ExtenderSettings(publish_interval_seconds=10.0, max_request_bytes=MAX_REQUEST_BYTES)


def tier_load(age_seconds: float = 1.0, normal: int = 0, critical: int = 0) -> TierLoad:
    return TierLoad(
        timestamp_seconds=NOW - age_seconds,
        node_cpu_millicores=4000,
        tiers={
            Tier.NORMAL: TierLoadEntry(protection_capacity_millicores=normal),
            Tier.CRITICAL: TierLoadEntry(protection_capacity_millicores=critical),
        },
    )


class FakeNodeCache:
    """Stands in for the watch-fed NodeCache: fixed loads and bound-pod sums per node."""

    def __init__(self) -> None:
        self.loads: dict[str, TierLoad] = {}
        self.bound: dict[str, dict[Tier, int]] = {}
        self.synced = True

    def ready(self) -> bool:
        return self.synced

    @property
    def capacities(self) -> CapacityTable:
        table = CapacityTable()
        for name, load in self.loads.items():
            table.put(name, node_capacity(load, self.bound.get(name, {})))
        return table

    def capacity_from_annotations(
        self, node_name: str, annotations: Mapping[str, Any] | None
    ) -> NodeCapacity | None:
        raw = (annotations or {}).get(TIER_LOAD)
        try:
            load = TierLoad.decode(raw) if raw else None
        except InvalidAnnotationError:
            return None
        return None if load is None else node_capacity(load, self.bound.get(node_name, {}))

    def age_seconds(self) -> float | None:
        return 2.5


@pytest.fixture
def cache() -> FakeNodeCache:
    fake = FakeNodeCache()
    fake.loads = {
        "roomy": tier_load(normal=4000, critical=4000),
        "tight": tier_load(normal=1200, critical=500),
        "stale": tier_load(age_seconds=31.0, normal=1000, critical=0),
    }
    return fake


@pytest.fixture
async def base_url(cache: FakeNodeCache) -> AsyncIterator[str]:
    server = TestServer(build_app(cache, SETTINGS, clock=lambda: NOW), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/"))
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def pod(cpu: str = "1", priority_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"metadata": {"name": "web", "namespace": "shop"}, "spec": spec}


def node_object(name: str, load: TierLoad | None) -> dict[str, Any]:
    annotations = {TIER_LOAD: load.encode()} if load else {}
    return {"metadata": {"name": name, "annotations": annotations}, "status": {"images": []}}


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data, headers={"Content-Type": "application/json"}) as reply:
        return reply.status, orjson.loads(await reply.read())


CRITICAL_POD = pod(cpu="1", priority_class="temper-critical")


async def test_filter_names_rejects_critical_as_unresolvable(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    names = ["roomy", "tight", "stale", "never-seen"]
    status, body = await post(
        http, base_url + "filter", {"Pod": CRITICAL_POD, "Nodes": None, "NodeNames": names}
    )
    assert status == 200
    assert body["NodeNames"] == ["roomy", "stale", "never-seen"]
    assert body["FailedAndUnresolvableNodes"] == {"tight": CRITICAL_CAPACITY_EXCEEDED}
    assert body["FailedNodes"] == {}
    assert body["Error"] == ""


async def test_filter_names_passes_normal_pod_everywhere(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    names = ["roomy", "tight", "stale"]
    _, body = await post(http, base_url + "filter", {"Pod": pod(cpu="8"), "NodeNames": names})
    assert body["NodeNames"] == names
    assert body["FailedAndUnresolvableNodes"] == {}


async def test_filter_full_nodes_echoes_passing_objects(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    # In full mode the annotations of the received objects count, not the cache.
    items = [
        node_object("fresh-small", tier_load(critical=100)),
        node_object("fresh-big", tier_load(critical=2000)),
        node_object("bare", None),
    ]
    node_list = {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items}
    status, body = await post(
        http, base_url + "filter", {"Pod": CRITICAL_POD, "Nodes": node_list, "NodeNames": None}
    )
    assert status == 200
    assert body["Nodes"]["items"] == [items[1], items[2]]
    assert body["Nodes"]["kind"] == "NodeList"
    assert body["NodeNames"] is None
    assert list(body["FailedAndUnresolvableNodes"]) == ["fresh-small"]


async def test_prioritize_names_packs_and_stays_neutral(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    names = ["roomy", "tight", "stale", "never-seen"]
    status, body = await post(http, base_url + "prioritize", {"Pod": pod(), "NodeNames": names})
    assert status == 200
    scores = {entry["Host"]: entry["Score"] for entry in body}
    assert list(scores) == names
    assert scores["tight"] > scores["roomy"]
    assert scores["stale"] == NEUTRAL_SCORE
    assert scores["never-seen"] == NEUTRAL_SCORE
    assert all(type(score) is int for score in scores.values())


async def test_prioritize_counts_bound_pods(
    cache: FakeNodeCache, base_url: str, http: aiohttp.ClientSession
) -> None:
    cache.bound["tight"] = {Tier.NORMAL: 1000}
    _, body = await post(
        http, base_url + "prioritize", {"Pod": pod(), "NodeNames": ["roomy", "tight"]}
    )
    scores = {entry["Host"]: entry["Score"] for entry in body}
    assert scores["tight"] == 0
    assert scores["roomy"] > 0


async def test_prioritize_full_nodes_reads_annotations(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    items = [
        node_object("big", tier_load(normal=8000)),
        node_object("snug", tier_load(normal=1000)),
        node_object("garbage", None),
    ]
    items[2]["metadata"]["annotations"][TIER_LOAD] = "{not json"
    _, body = await post(http, base_url + "prioritize", {"Pod": pod(), "Nodes": {"items": items}})
    assert body == [
        {"Host": "big", "Score": 2},
        {"Host": "snug", "Score": 10},
        {"Host": "garbage", "Score": NEUTRAL_SCORE},
    ]


BAD_REQUESTS = [
    (b"{not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (orjson.dumps({"NodeNames": ["a"]}), "field Pod"),
    (orjson.dumps({"Pod": pod(), "NodeNames": None, "Nodes": None}), "NodeNames and Nodes"),
    (orjson.dumps({"Pod": pod(), "NodeNames": "a,b"}), "field NodeNames"),
    (orjson.dumps({"Pod": pod(), "NodeNames": [1]}), "field NodeNames"),
    (orjson.dumps({"Pod": pod(), "Nodes": {"items": [{"metadata": {}}]}}), "items[0]"),
    (orjson.dumps({"Pod": pod(), "Nodes": []}), "NodeList"),
    (orjson.dumps({"Pod": pod(cpu="lots"), "NodeNames": ["a"]}), "lots"),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
async def test_filter_malformed_request_is_400(
    base_url: str, http: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    status, reply = await post(http, base_url + "filter", body)
    assert status == 400
    assert message in reply["Error"]
    assert reply["NodeNames"] is None


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
async def test_prioritize_malformed_request_is_400(
    base_url: str, http: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    status, reply = await post(http, base_url + "prioritize", body)
    assert status == 400
    assert message in reply["Error"]


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
async def test_oversized_body_is_413(base_url: str, http: aiohttp.ClientSession, verb: str) -> None:
    names = [f"node-{index:06d}" for index in range(MAX_REQUEST_BYTES // 10)]
    status, reply = await post(http, base_url + verb, {"Pod": pod(), "NodeNames": names})
    assert status == 413
    assert str(MAX_REQUEST_BYTES) in reply["Error"]


async def test_readyz_follows_cache_sync(
    cache: FakeNodeCache, base_url: str, http: aiohttp.ClientSession
) -> None:
    cache.synced = False
    async with http.get(base_url + "readyz") as reply:
        assert reply.status == 503
    cache.synced = True
    async with http.get(base_url + "readyz") as reply:
        assert reply.status == 200
    async with http.get(base_url + "healthz") as reply:
        assert reply.status == 200


async def test_metrics_expose_latency_decisions_and_age(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    await post(http, base_url + "filter", {"Pod": CRITICAL_POD, "NodeNames": ["tight", "x"]})
    await post(http, base_url + "prioritize", b"{")
    async with http.get(base_url + "metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    assert 'temper_extender_request_duration_seconds_count{verb="filter"} 1.0' in text
    assert 'temper_extender_decisions_total{outcome="rejected",verb="filter"} 1.0' in text
    assert (
        'temper_extender_decisions_total{outcome="passed_without_data",verb="filter"} 1.0' in text
    )
    assert 'temper_extender_decisions_total{outcome="invalid_request",verb="prioritize"} 1.0' in (
        text
    )
    assert "temper_extender_node_cache_age_seconds 2.5" in text
