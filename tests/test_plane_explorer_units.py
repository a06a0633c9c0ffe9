"""Pure parts of the plane's explorer: layer matching, QoS class, label selectors, revision
diffs, the event hub's filters, de-duplication and queue bound, and the settings."""

import asyncio

import pytest
from pydantic import ValidationError

from plane import explorer
from plane.events import EventHub, StreamFilter, TooManySubscribersError
from plane.explorer_settings import ExplorerSettings

UID = "2c1e9a70-1111-4222-8333-444455556666"
POD = {"metadata": {"uid": UID, "namespace": "shop", "name": "web"}}


def test_reported_layer_prefers_first_cgroup_match() -> None:
    prefix = f"kubepods/burstable/pod{UID}/"
    layers = [
        {"name": "profile-latency", "matches": [[{"CgroupPrefix": prefix}, {"CommPrefix": "io"}]]},
        {"name": "high-limited", "matches": [[{"CgroupPrefix": "kubepods/pod-other/"}]]},
        {"name": "critical", "matches": [[{"CgroupPrefix": prefix}]]},
        {"name": "normal", "matches": [[]]},
    ]
    found = explorer.reported_layer(layers, explorer.uid_variants(POD))
    assert found == {
        "layer": "critical",
        "matchedBy": "cgroup",
        "profileLayers": ["profile-latency"],
    }


def test_reported_layer_reads_regex_and_systemd_names() -> None:
    systemd = UID.replace("-", "_")
    escaped = f"kubepods\\.slice/kubepods\\-burstable\\.slice/kubepods\\-burstable\\-pod{systemd}"
    regex = f"^/sys/fs/cgroup/(other|{escaped})(/.*)?$"
    layers = [{"name": "low", "matches": [[{"CgroupRegex": regex}]]}, {"name": "normal",
              "matches": [[]]}]  # fmt: skip
    assert explorer.reported_layer(layers, explorer.uid_variants(POD))["layer"] == "low"


def test_reported_layer_falls_to_catch_all() -> None:
    layers = [{"name": "critical", "matches": [[{"CgroupPrefix": "kubepods/podx/"}]]},
              {"name": "normal", "matches": [[]]}]  # fmt: skip
    found = explorer.reported_layer(layers, explorer.uid_variants(POD))
    assert (found["layer"], found["matchedBy"]) == ("normal", "catch-all")


def test_static_pod_matches_by_config_hash() -> None:
    pod = {"metadata": {"uid": "u1", "annotations": {"kubernetes.io/config.hash": "abc123"}}}
    layers = [{"name": "high", "matches": [[{"CgroupPrefix": "kubepods/podabc123/"}]]}]
    assert explorer.reported_layer(layers, explorer.uid_variants(pod))["layer"] == "high"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, "BestEffort"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
        ({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
         "Guaranteed"),
        ({"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}}, "Burstable"),
        ({"requests": {"cpu": "100m"}}, "Burstable"),
    ],
)  # fmt: skip
def test_qos_class_without_status(resources: dict[str, dict[str, str]], expected: str) -> None:
    pod = {"spec": {"containers": [{"name": "app", "resources": resources}]}}
    assert explorer.qos_class(pod) == expected


def test_qos_class_prefers_status() -> None:
    pod = {"spec": {"containers": [{"name": "app"}]}, "status": {"qosClass": "Burstable"}}
    assert explorer.qos_class(pod) == "Burstable"


def test_label_selector_string() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "app", "operator": "Exists"},
            {"key": "old", "operator": "DoesNotExist"},
        ],
    }
    assert explorer.label_selector(selector) == "a=1,b=2,tier in (x,y),env notin (dev),app,!old"


def _revision(number: int, image: str, current: bool = False) -> dict[str, object]:
    template = {"spec": {"containers": [{"name": "app", "image": image}]}}
    return {"revision": number, "current": current, "template": template}


def test_revision_diff_defaults_to_current_and_previous() -> None:
    kind = explorer.WORKLOAD_KINDS["deployments"]
    entries = [_revision(1, "a:1"), _revision(2, "a:2"), _revision(3, "a:3", current=True)]
    diff = explorer.revision_diff(
        kind, "shop", "web", entries, from_revision=None, to_revision=None
    )
    assert (diff["from"], diff["to"], diff["identical"]) == (2, 3, False)
    assert "-  - image: a:2\n" in diff["diff"]
    assert "+  - image: a:3\n" in diff["diff"]
    assert diff["diff"].startswith("--- deployments/web revision 2\n+++ deployments/web revision 3")


def test_revision_diff_names_missing_revision() -> None:
    kind = explorer.WORKLOAD_KINDS["statefulsets"]
    entries = [_revision(1, "a:1", current=True)]
    with pytest.raises(explorer.ExplorerError) as raised:
        explorer.revision_diff(kind, "shop", "db", entries, from_revision=None, to_revision=None)
    assert raised.value.status == 404
    assert "statefulset shop/db has no revision before 1" in raised.value.message
    with pytest.raises(explorer.ExplorerError, match=r"no revision 7 \(to\); its revisions"):
        explorer.revision_diff(kind, "shop", "db", entries, from_revision=1, to_revision=7)


def _pod(name: str, node: str, phase: str = "Running") -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"nodeName": node, "containers": []},
        "status": {"phase": phase},
    }


async def test_hub_filters_and_drops_unchanged_summaries() -> None:
    hub = EventHub(queue_size=10, max_subscribers=5)
    on_a = hub.subscribe(StreamFilter(node="node-a"))
    pods_only = hub.subscribe(StreamFilter(kinds=frozenset({"pods"}), namespace="other"))
    hub.publish("pods", "ADDED", _pod("web", "node-a"))
    hub.publish("pods", "MODIFIED", _pod("web", "node-a"))  # same summary: dropped
    hub.publish("pods", "MODIFIED", _pod("web", "node-a", phase="Succeeded"))
    hub.publish("pods", "ADDED", _pod("db", "node-b"))
    hub.publish("pods", "DELETED", _pod("web", "node-a"))
    events = [on_a.queue.get_nowait() for _ in range(on_a.queue.qsize())]
    assert [(e.type, e.key, e.summary.get("phase")) for e in events] == [
        ("ADDED", "shop/web", "Running"),
        ("MODIFIED", "shop/web", "Succeeded"),
        ("DELETED", "shop/web", "Succeeded"),
    ]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert pods_only.queue.empty()
    assert b"event: pod\ndata: " in events[0].encode()


async def test_hub_marks_slow_subscriber_overflowed() -> None:
    hub = EventHub(queue_size=2, max_subscribers=1)
    subscriber = hub.subscribe(StreamFilter())
    for index in range(4):
        hub.publish("nodes", "ADDED", {"metadata": {"name": f"n{index}"}})
    assert subscriber.overflowed
    assert subscriber.queue.qsize() == 2
    assert subscriber.dropped == 1  # nothing is queued once a subscriber has overflowed
    with pytest.raises(TooManySubscribersError, match="events-max-clients"):
        hub.subscribe(StreamFilter())
    hub.unsubscribe(subscriber)
    hub.subscribe(StreamFilter())
    await asyncio.sleep(0)


def test_snapshot_holds_primed_objects() -> None:
    hub = EventHub(queue_size=10, max_subscribers=5)
    hub.prime("nodes", [{"metadata": {"name": "n1"}}])
    hub.prime("pods", [_pod("web", "n1"), _pod("db", "n2")])
    snapshot = hub.snapshot(StreamFilter(node="n1"))
    assert [(e.kind, e.key) for e in snapshot] == [("nodes", "n1"), ("pods", "shop/web")]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("http://{node}:9402", "unknown placeholders ['node']"),
        ("ftp://{node_ip}:9402", "must start with http:// or https://"),
        ("http://{node_ip:9402", "not a valid URL template"),
    ],
)
def test_agent_url_template_is_checked(template: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ExplorerSettings(agent_url_template=template)


def test_agent_url_template_accepts_placeholders() -> None:
    settings = ExplorerSettings(agent_url_template="https://{node_name}.agents:9402/")
    assert settings.agent_url_template == "https://{node_name}.agents:9402"
