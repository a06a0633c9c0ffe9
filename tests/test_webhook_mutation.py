"""Overcommit rules: which CPU requests the webhook scales, and the JSON Patch it returns."""

import copy
from decimal import Decimal
from typing import Any

import pytest

from temper.annotations import ORIGINAL_REQUESTS, OriginalRequests
from webhook.limitranges import NO_LIMIT_RANGE, CpuLimitRange
from webhook.mutation import InvalidPodError, escape_pointer_token, mutate_pod
from webhook.settings import WebhookSettings

# Factors: high 0.8, normal 0.6, low 0.4, background 0.25; floor 10m.
SETTINGS = WebhookSettings()


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """Apply RFC 6902 add, replace, remove and test operations to a copy of ``document``.

    Missing parents, and replace or remove of a missing member, raise KeyError or IndexError
    as RFC 6902 requires them to fail.
    """
    result = copy.deepcopy(document)
    for operation in operations:
        path = operation["path"]
        assert path.startswith("/"), f"JSON Pointer {path!r} must start with /"
        tokens = [_unescape(token) for token in path[1:].split("/")]
        parent = result
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        kind = operation["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, operation["value"])
            elif kind == "replace":
                parent[index] = operation["value"]
            elif kind == "remove":
                del parent[index]
            elif kind == "test":
                assert parent[index] == operation["value"]
            else:
                raise ValueError(f"unsupported op {kind!r}")
            continue
        if kind == "add":
            parent[last] = operation["value"]
        elif kind == "replace":
            if last not in parent:
                raise KeyError(f"replace of missing member {path}")
            parent[last] = operation["value"]
        elif kind == "remove":
            del parent[last]
        elif kind == "test":
            assert parent[last] == operation["value"]
        else:
            raise ValueError(f"unsupported op {kind!r}")
    return result


def container(
    name: str = "app",
    *,
    cpu_request: str | None = None,
    cpu_limit: str | None = None,
    memory_request: str | None = None,
    memory_limit: str | None = None,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    requests = {"cpu": cpu_request, "memory": memory_request}
    limits = {"cpu": cpu_limit, "memory": memory_limit}
    resources: dict[str, Any] = {}
    if any(requests.values()):
        resources["requests"] = {key: value for key, value in requests.items() if value}
    if any(limits.values()):
        resources["limits"] = {key: value for key, value in limits.items() if value}
    result: dict[str, Any] = {"name": name, "image": "registry.invalid/app:1"}
    result["resources"] = resources
    if restart_policy:
        result["restartPolicy"] = restart_policy
    return result


def pod(
    *containers: dict[str, Any],
    init: tuple[dict[str, Any], ...] = (),
    priority_class: str | None = None,
    priority: int | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [container(cpu_request="1")]}
    if init:
        spec["initContainers"] = list(init)
    if priority_class:
        spec["priorityClassName"] = priority_class
    if priority is not None:
        spec["priority"] = priority
    metadata: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def mutated(
    source: dict[str, Any],
    cpu_min_millicores: int | None = None,
    limit_range: CpuLimitRange = NO_LIMIT_RANGE,
) -> dict[str, Any]:
    if cpu_min_millicores is not None:
        limit_range = CpuLimitRange(container_min_millicores=cpu_min_millicores)
    mutation = mutate_pod(source, SETTINGS, limit_range)
    result: dict[str, Any] = apply_json_patch(source, mutation.patch)
    return result


def cpu_request(result: dict[str, Any], index: int = 0, key: str = "containers") -> Any:
    return result["spec"][key][index]["resources"].get("requests", {}).get("cpu")


@pytest.mark.parametrize(
    ("priority_class", "priority", "original", "expected"),
    [
        (None, None, "1", "600m"),
        ("temper-high", None, "1", "800m"),
        ("temper-normal", None, "1500m", "900m"),
        ("temper-low", None, "2", "800m"),
        ("temper-background", None, "4", "1"),
        (None, -1_000, "1", "400m"),
        (None, 10_000, "1", "800m"),
        (None, None, "0.5", "300m"),
        (None, None, "1001m", "601m"),
        (None, None, "12m", "10m"),
        ("temper-background", None, "20m", "10m"),
    ],
)
def test_request_scaled_by_tier_factor(
    priority_class: str | None, priority: int | None, original: str, expected: str
) -> None:
    source = pod(container(cpu_request=original), priority_class=priority_class, priority=priority)
    assert cpu_request(mutated(source)) == expected


@pytest.mark.parametrize(
    ("case", "source", "reason"),
    [
        ("critical class", pod(priority_class="temper-critical"), "critical tier"),
        ("critical priority", pod(priority=100_000), "critical tier"),
        ("node-critical", pod(priority_class="system-node-critical"), "system priority class"),
        (
            "cluster-critical",
            pod(priority_class="system-cluster-critical"),
            "system priority class",
        ),
        ("system priority value", pod(priority=2_000_000_000), "system priority class"),
        (
            "mirror pod",
            pod(annotations={"kubernetes.io/config.mirror": "abc"}),
            "mirror pod",
        ),
        (
            "already annotated",
            pod(annotations={ORIGINAL_REQUESTS: '{"cpu":{"app":"1"},"v":1}'}),
            f"already carries {ORIGINAL_REQUESTS}",
        ),
        (
            "guaranteed",
            pod(
                container(
                    cpu_request="1", cpu_limit="1000m", memory_request="1Gi", memory_limit="1024Mi"
                )
            ),
            "Guaranteed QoS class",
        ),
        (
            "guaranteed from limits",
            pod(container(cpu_limit="1", memory_limit="1Gi")),
            "Guaranteed QoS class",
        ),
        (
            "guaranteed with init",
            pod(
                container(cpu_request="1", cpu_limit="1", memory_limit="1Gi"),
                init=(container("init", cpu_limit="2", memory_limit="64Mi"),),
            ),
            "Guaranteed QoS class",
        ),
        ("limits only", pod(container(cpu_limit="1")), None),
        ("request equals limit", pod(container(cpu_request="1", cpu_limit="1")), None),
        ("no resources", pod(container()), None),
        ("memory only", pod(container(memory_request="1Gi")), None),
        ("request at floor", pod(container(cpu_request="10m")), None),
        ("request below floor", pod(container(cpu_request="5m")), None),
    ],
)
def test_pod_left_unchanged(case: str, source: dict[str, Any], reason: str | None) -> None:
    mutation = mutate_pod(source, SETTINGS)
    assert mutation.patch == [], case
    assert mutation.skip_reason == reason, case


def test_pod_level_cpu_skipped_with_warning() -> None:
    source = pod(container(cpu_request="1"))
    source["spec"]["resources"] = {"limits": {"cpu": "2"}}
    mutation = mutate_pod(source, SETTINGS)
    assert mutation.patch == []
    assert mutation.skip_reason == "pod-level CPU resources"
    assert any("pod-level CPU" in warning for warning in mutation.warnings)


def test_pod_level_memory_still_scales_containers() -> None:
    source = pod(
        container(cpu_request="1", cpu_limit="1", memory_limit="1Gi"),
        container("side", cpu_request="500m"),
    )
    source["spec"]["resources"] = {"limits": {"memory": "2Gi"}}
    result = mutated(source)
    assert cpu_request(result, 0) == "1"
    assert cpu_request(result, 1) == "300m"


def test_limits_and_memory_never_touched() -> None:
    source = pod(
        container(cpu_request="1", cpu_limit="2", memory_request="256Mi", memory_limit="1Gi")
    )
    mutation = mutate_pod(source, SETTINGS)
    result = apply_json_patch(source, mutation.patch)
    resources = result["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert resources["requests"]["memory"] == "256Mi"
    assert resources["requests"]["cpu"] == "600m"
    assert not any("limits" in operation["path"] for operation in mutation.patch)


def test_burstable_pod_keeps_request_equal_to_limit() -> None:
    source = pod(
        container("pinned", cpu_request="1", cpu_limit="1", memory_limit="1Gi"),
        container("elastic", cpu_request="1", memory_request="1Gi"),
    )
    result = mutated(source)
    assert cpu_request(result, 0) == "1"
    assert cpu_request(result, 1) == "600m"


def test_init_containers_and_sidecars_scaled() -> None:
    source = pod(
        container("app", cpu_request="2"),
        init=(
            container("setup", cpu_request="1"),
            container("proxy", cpu_request="500m", restart_policy="Always"),
        ),
    )
    result = mutated(source)
    assert cpu_request(result, 0, "initContainers") == "600m"
    assert cpu_request(result, 1, "initContainers") == "300m"
    assert cpu_request(result, 0) == "1200m"


def test_annotation_records_every_original() -> None:
    source = pod(
        container("app", cpu_request="2"),
        container("pinned", cpu_request="1", cpu_limit="1"),
        container("bare"),
        init=(container("setup", cpu_request="1"),),
    )
    result = mutated(source)
    record = OriginalRequests.decode(result["metadata"]["annotations"][ORIGINAL_REQUESTS])
    assert record.containers == {"app": "2", "pinned": "1", "bare": None}
    assert record.init_containers == {"setup": "1"}


def test_annotations_created_when_missing() -> None:
    mutation = mutate_pod(pod(), SETTINGS)
    operation = mutation.patch[-1]
    assert operation["op"] == "add"
    assert operation["path"] == "/metadata/annotations"
    assert set(operation["value"]) == {ORIGINAL_REQUESTS}


def test_annotations_created_when_null() -> None:
    source = pod()
    source["metadata"]["annotations"] = None
    result = mutated(source)
    assert ORIGINAL_REQUESTS in result["metadata"]["annotations"]


def test_metadata_created_when_missing() -> None:
    source = pod()
    del source["metadata"]
    result = mutated(source)
    assert ORIGINAL_REQUESTS in result["metadata"]["annotations"]


def test_annotation_key_escaped_in_path() -> None:
    source = pod(annotations={"example.com/owner": "team-a"})
    mutation = mutate_pod(source, SETTINGS)
    assert mutation.patch[-1]["path"] == "/metadata/annotations/temper.codes~1original-requests"
    result = apply_json_patch(source, mutation.patch)
    assert result["metadata"]["annotations"]["example.com/owner"] == "team-a"
    assert ORIGINAL_REQUESTS in result["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("token", "escaped"),
    [
        ("plain", "plain"),
        ("a/b", "a~1b"),
        ("a~b", "a~0b"),
        ("~/", "~0~1"),
        # "~1" must become "~01": escaping "/" first would turn it into "~1" again.
        ("~1", "~01"),
    ],
)
def test_pointer_token_escaped(token: str, escaped: str) -> None:
    assert escape_pointer_token(token) == escaped
    assert _unescape(escaped) == token


def test_applier_rejects_replace_of_missing_member() -> None:
    # The applier must fail here, or the replace operations above prove nothing.
    with pytest.raises(KeyError):
        apply_json_patch({"a": {}}, [{"op": "replace", "path": "/a/b", "value": 1}])


def test_reinvocation_returns_no_patch() -> None:
    first = mutated(pod(container(cpu_request="1")))
    again = mutate_pod(first, SETTINGS)
    assert again.patch == []
    assert again.skip_reason == f"already carries {ORIGINAL_REQUESTS}"


@pytest.mark.parametrize(
    ("cpu_min_millicores", "original", "expected"),
    [
        (None, "1", "600m"),
        (700, "1", "700m"),
        (1000, "1", "1"),
        (2000, "1", "1"),
        (5, "12m", "10m"),
    ],
)
def test_limit_range_minimum_clamps(
    cpu_min_millicores: int | None, original: str, expected: str
) -> None:
    source = pod(container(cpu_request=original))
    assert cpu_request(mutated(source, cpu_min_millicores)) == expected


def test_warning_names_container_and_values() -> None:
    name = "c" * 63
    mutation = mutate_pod(pod(container(name, cpu_request="1500m")), SETTINGS)
    assert mutation.warnings == [f"temper overcommit: {name} cpu request 1500m -> 900m"]
    assert all(len(warning) <= 120 for warning in mutation.warnings)


def test_invalid_quantity_left_unchanged_with_warning() -> None:
    source = pod(container("bad", cpu_request="lots"), container("good", cpu_request="1"))
    mutation = mutate_pod(source, SETTINGS)
    result = apply_json_patch(source, mutation.patch)
    assert cpu_request(result, 0) == "lots"
    assert cpu_request(result, 1) == "600m"
    assert any("bad" in warning and "lots" in warning for warning in mutation.warnings)


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    source = pod(container(cpu_request="1"))
    target: Any = source
    for key in path[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[path[-1]] = value
    return source


@pytest.mark.parametrize(
    ("case", "source"),
    [
        ("spec is a list", _with(("spec",), [])),
        ("containers is an object", _with(("spec", "containers"), {"name": "app"})),
        ("container is a string", _with(("spec", "containers"), ["app"])),
        ("container without name", _with(("spec", "containers", "0", "name"), None)),
        ("resources is a string", _with(("spec", "containers", "0", "resources"), "1")),
        (
            "requests is a list",
            _with(("spec", "containers", "0", "resources", "requests"), ["1"]),
        ),
        ("annotations is a list", _with(("metadata", "annotations"), ["a"])),
        ("initContainers is a string", _with(("spec", "initContainers"), "init")),
    ],
)
def test_invalid_shape_raises(case: str, source: dict[str, Any]) -> None:
    with pytest.raises(InvalidPodError):
        mutate_pod(source, SETTINGS)


def test_non_object_pod_raises() -> None:
    with pytest.raises(InvalidPodError):
        mutate_pod([], SETTINGS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "cpu_limit", "ratio", "expected"),
    [
        ("floor above scaled", "1200m", "1.5", "800m"),
        ("floor below scaled", "1200m", "4", "600m"),
        ("fractional ratio", "1700m", "2.5", "680m"),
        ("floor at original", "1100m", "1.1", "1"),
        ("original already beyond ratio", "3", "2", "1"),
        ("no limit", None, "2", "600m"),
    ],
)
def test_limit_range_ratio_floor(
    case: str, cpu_limit: str | None, ratio: str, expected: str
) -> None:
    source = pod(container(cpu_request="1", cpu_limit=cpu_limit))
    limit_range = CpuLimitRange(container_max_limit_request_ratio=Decimal(ratio))
    assert cpu_request(mutated(source, limit_range=limit_range)) == expected, case


def test_limit_range_larger_floor_wins() -> None:
    source = pod(container(cpu_request="1", cpu_limit="1200m"))
    limit_range = CpuLimitRange(
        container_min_millicores=900, container_max_limit_request_ratio=Decimal("1.5")
    )
    assert cpu_request(mutated(source, limit_range=limit_range)) == "900m"


def test_limit_range_floor_covers_init_containers() -> None:
    source = pod(
        container(cpu_request="1", cpu_limit="1200m"),
        init=(
            container("setup", cpu_request="1", cpu_limit="1200m"),
            container("proxy", cpu_request="1", cpu_limit="1200m", restart_policy="Always"),
        ),
    )
    limit_range = CpuLimitRange(
        container_min_millicores=700, container_max_limit_request_ratio=Decimal("1.5")
    )
    result = mutated(source, limit_range=limit_range)
    assert cpu_request(result, 0, "initContainers") == "800m"
    assert cpu_request(result, 1, "initContainers") == "800m"
    assert cpu_request(result) == "800m"


def two_container_pod() -> dict[str, Any]:
    # Requests add up to 2 (1200m once scaled by 0.6), limits to 4.
    return pod(
        container("a", cpu_request="1", cpu_limit="2"),
        container("b", cpu_request="1", cpu_limit="2"),
    )


@pytest.mark.parametrize(
    ("case", "limit_range", "reason"),
    [
        ("pod min", CpuLimitRange(pod_min_millicores=1500), "LimitRange Pod min 1500m"),
        (
            "pod ratio",
            CpuLimitRange(pod_max_limit_request_ratio=Decimal(3)),
            "LimitRange Pod maxLimitRequestRatio 3",
        ),
    ],
)
def test_limit_range_pod_constraint_skips_pod(
    case: str, limit_range: CpuLimitRange, reason: str
) -> None:
    mutation = mutate_pod(two_container_pod(), SETTINGS, limit_range)
    assert mutation.patch == [], case
    assert mutation.skip_reason == reason, case
    assert any(reason in warning for warning in mutation.warnings), case
    assert all(len(warning) <= 120 for warning in mutation.warnings), case


def test_limit_range_pod_constraint_met_scales() -> None:
    limit_range = CpuLimitRange(pod_min_millicores=1200, pod_max_limit_request_ratio=Decimal("3.4"))
    result = mutated(two_container_pod(), limit_range=limit_range)
    assert cpu_request(result, 0) == "600m"
    assert cpu_request(result, 1) == "600m"


def test_limit_range_pod_total_counts_sidecars() -> None:
    # Sum: app 1 + sidecar 1 = 2, scaled to 1200m; the pod minimum of 1200m holds only if
    # the sidecar counts in the sum as LimitRanger counts it.
    source = pod(
        container(cpu_request="1"),
        init=(container("proxy", cpu_request="1", restart_policy="Always"),),
    )
    result = mutated(source, limit_range=CpuLimitRange(pod_min_millicores=1200))
    assert cpu_request(result) == "600m"
    assert cpu_request(result, 0, "initContainers") == "600m"
