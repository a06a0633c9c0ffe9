"""Resize planning of the tracking applier: opt-in, bounds, QoS, hysteresis, records."""

from typing import Any

import orjson
import pytest

from rightsizer.annotation import Status, WorkloadRecommendation
from rightsizer.applied import AppliedResize, decode_applied, encode_applied, record_changes
from rightsizer.owners import Workload
from rightsizer.resizeplan import (
    ApplyPolicy,
    Bound,
    ContainerChange,
    PodPlan,
    SkipReason,
    label_problem,
    opted_in,
    plan_pod,
    qos_class,
    resize_patch,
)
from rightsizer.resizer import change_note, classify_failure, describe_failure
from temper.errors import InvalidAnnotationError, KubernetesError
from tests.rightsizerharness import container, tracking_recommendation

NOW = 1_800_000_000.0
WORKLOAD = Workload("Deployment", "shop", "web")
POLICY = ApplyPolicy(hysteresis_fraction=0.1, min_cpu_millicores=10)


def recommendation(
    tracking_m: int | None = 600,
    *,
    status: Status = Status.PROPOSED,
    computed: float = NOW - 10,
    window_end: float = NOW - 12,
    tracking_seconds: float | None = 300,
    containers: tuple[str, ...] = ("app",),
) -> WorkloadRecommendation:
    return tracking_recommendation(
        tracking_m,
        request_m=900,
        computed=computed,
        window_end=window_end,
        status=status,
        tracking_seconds=tracking_seconds,
        containers=containers,
    )


def pod(*containers: dict[str, Any], qos: str | None = "Burstable", **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if qos is not None:
        status["qosClass"] = qos
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "uid-1", "resourceVersion": "42"},
        "spec": {"nodeName": "node-a", "containers": list(containers or [container()]), **spec},
        "status": status,
    }


def plan(
    target: dict[str, Any],
    advice: WorkloadRecommendation | None = None,
    policy: ApplyPolicy = POLICY,
) -> PodPlan:
    return plan_pod(target, WORKLOAD, advice or recommendation(), policy, NOW)


def reasons(result: PodPlan) -> list[tuple[str | None, SkipReason]]:
    return [(skip.container, skip.reason) for skip in result.skips]


def test_plan_sets_tracking_request() -> None:
    result = plan(pod())
    assert result.skips == []
    assert result.changes == [ContainerChange("app", 2000, 600, 600)]


def test_plan_raises_to_floor() -> None:
    result = plan(pod(container(cpu_request="100m")), recommendation(tracking_m=3))
    assert result.changes == [ContainerChange("app", 100, 10, 3, Bound.FLOOR)]


def test_plan_caps_at_limit() -> None:
    result = plan(pod(container(cpu_request="500m", cpu_limit="1")), recommendation(1500))
    assert result.changes == [ContainerChange("app", 500, 1000, 1500, Bound.LIMIT)]


def test_plan_limit_wins_over_floor() -> None:
    target = pod(container(cpu_request="2m", cpu_limit="5m"))
    result = plan(target, recommendation(1), ApplyPolicy(0.0, 10))
    assert result.changes == [ContainerChange("app", 2, 5, 1, Bound.LIMIT)]


def test_plan_stays_below_limit_to_keep_burstable() -> None:
    # CPU at its limit would make every request equal its limit: the pod would turn
    # Guaranteed, which a resize may not do.
    target = pod(container(cpu_request="500m", cpu_limit="1", memory="64Mi"))
    result = plan(target, recommendation(1500))
    assert result.changes == [ContainerChange("app", 500, 999, 1500, Bound.BELOW_LIMIT)]


def test_plan_at_limit_when_other_container_stays_burstable() -> None:
    target = pod(
        container("app", cpu_request="500m", cpu_limit="1", memory="64Mi"),
        container("sidecar", cpu_request="50m"),
    )
    result = plan(target, recommendation(1500))
    assert result.changes == [ContainerChange("app", 500, 1000, 1500, Bound.LIMIT)]
    assert reasons(result) == [("sidecar", SkipReason.NOT_RECOMMENDED)]


@pytest.mark.parametrize(
    ("case", "tracking_m", "changed"),
    [
        ("10% below is within", 1800, False),
        ("just over 10% below", 1799, True),
        ("10% above is within", 2200, False),
        ("just over 10% above", 2201, True),
        ("equal", 2000, False),
    ],
)
def test_plan_hysteresis(case: str, tracking_m: int, changed: bool) -> None:
    result = plan(pod(), recommendation(tracking_m))
    assert bool(result.changes) is changed, case
    if not changed:
        assert reasons(result) == [("app", SkipReason.WITHIN_HYSTERESIS)], case


def test_plan_hysteresis_after_bounds() -> None:
    # The tracking request is far above, but the limit leaves only a 5% step.
    result = plan(pod(container(cpu_request="950m", cpu_limit="1")), recommendation(3000))
    assert result.changes == []
    assert reasons(result) == [("app", SkipReason.WITHIN_HYSTERESIS)]


@pytest.mark.parametrize(
    ("case", "target", "advice", "reason"),
    [
        (
            "guaranteed",
            pod(container(cpu_request="1", cpu_limit="1", memory="64Mi"), qos="Guaranteed"),
            recommendation(),
            SkipReason.GUARANTEED,
        ),
        (
            "best effort",
            pod(container(cpu_request=None), qos="BestEffort"),
            recommendation(),
            SkipReason.BEST_EFFORT,
        ),
        ("dismissed", pod(), recommendation(status=Status.DISMISSED), SkipReason.DISMISSED),
        (
            "expired by time",
            pod(),
            recommendation(computed=NOW - 301, window_end=NOW - 301),
            SkipReason.EXPIRED,
        ),
        (
            "expired by stale data",
            pod(),
            recommendation(computed=NOW - 5, window_end=NOW - 3600),
            SkipReason.EXPIRED,
        ),
        (
            "no tracking fields",
            pod(),
            recommendation(tracking_seconds=None),
            SkipReason.NO_TRACKING,
        ),
        ("not scheduled", pod(nodeName=""), recommendation(), SkipReason.NOT_SCHEDULED),
        (
            "pod-level resources",
            pod(resources={"requests": {"cpu": "2"}}),
            recommendation(),
            SkipReason.POD_LEVEL_RESOURCES,
        ),
    ],
)
def test_plan_skips_pod(
    case: str, target: dict[str, Any], advice: WorkloadRecommendation, reason: SkipReason
) -> None:
    result = plan(target, advice)
    assert result.changes == [], case
    assert reasons(result) == [(None, reason)], case


def test_plan_accepted_is_applied() -> None:
    assert plan(pod(), recommendation(status=Status.ACCEPTED)).changes


def test_plan_skips_without_recommendation() -> None:
    result = plan_pod(pod(), WORKLOAD, None, POLICY, NOW)
    assert reasons(result) == [(None, SkipReason.NO_RECOMMENDATION)]


@pytest.mark.parametrize(
    ("case", "phase", "metadata", "reason"),
    [
        ("succeeded", "Succeeded", {}, SkipReason.TERMINATED),
        ("failed", "Failed", {}, SkipReason.TERMINATED),
        ("deleting", "Running", {"deletionTimestamp": "2027-01-01T00:00:00Z"}, SkipReason.DELETING),
        (
            "static pod",
            "Running",
            {"annotations": {"kubernetes.io/config.mirror": "abc"}},
            SkipReason.STATIC_POD,
        ),
    ],
)
def test_plan_skips_pod_state(
    case: str, phase: str, metadata: dict[str, Any], reason: SkipReason
) -> None:
    target = pod()
    target["status"]["phase"] = phase
    target["metadata"].update(metadata)
    assert reasons(plan(target)) == [(None, reason)], case


def test_plan_skips_container_without_request() -> None:
    target = pod(container("app"), container("bare", cpu_request=None))
    result = plan(target, recommendation(containers=("app", "bare")))
    assert [c.name for c in result.changes] == ["app"]
    assert reasons(result) == [("bare", SkipReason.NO_CPU_REQUEST)]


def test_plan_skips_invalid_quantity() -> None:
    target = pod(container("app"), container("odd", cpu_request="two"))
    result = plan(target, recommendation(containers=("app", "odd")))
    assert result.changes == []
    assert reasons(result) == [(None, SkipReason.INVALID_QUANTITY)]
    assert "'two'" in result.skips[0].detail


def test_plan_container_without_tracking() -> None:
    result = plan(pod(), recommendation(tracking_m=None))
    assert result.changes == []
    assert reasons(result) == [("app", SkipReason.NOT_RECOMMENDED)]


def infeasible(target: dict[str, Any]) -> dict[str, Any]:
    target["status"]["conditions"] = [
        {
            "type": "PodResizePending",
            "status": "True",
            "reason": "Infeasible",
            "message": "Node didn't have enough capacity: cpu, requested: 8000, capacity: 4000",
        }
    ]
    return target


def test_plan_infeasible_blocks_increase() -> None:
    result = plan(infeasible(pod(container(cpu_request="200m"))), recommendation(600))
    assert result.changes == []
    assert reasons(result) == [("app", SkipReason.RESIZE_INFEASIBLE)]
    assert "enough capacity" in result.skips[0].detail
    assert result.pending is not None
    assert result.pending.reason == "Infeasible"


def test_plan_infeasible_allows_decrease() -> None:
    result = plan(infeasible(pod()), recommendation(600))
    assert result.changes == [ContainerChange("app", 2000, 600, 600)]


def test_plan_priority_prefers_increases() -> None:
    up = plan(pod(container(cpu_request="500m")), recommendation(600))
    down = plan(pod(), recommendation(100))
    assert up.priority < down.priority
    small_down = plan(pod(), recommendation(1500))
    assert down.priority < small_down.priority


@pytest.mark.parametrize(
    ("case", "containers", "expected"),
    [
        (
            "requests below limits",
            [container(cpu_request="1", cpu_limit="2", memory="1Gi")],
            "Burstable",
        ),
        ("all equal", [container(cpu_request="1", cpu_limit="1", memory="1Gi")], "Guaranteed"),
        ("no memory limit", [container(cpu_request="1", cpu_limit="1")], "Burstable"),
        ("nothing set", [container(cpu_request=None)], "BestEffort"),
        (
            "one of two burstable",
            [
                container("a", cpu_request="1", cpu_limit="1", memory="1Gi"),
                container("b", cpu_request="1"),
            ],
            "Burstable",
        ),
    ],
)
def test_qos_class(case: str, containers: list[dict[str, Any]], expected: str) -> None:
    assert qos_class({"containers": containers}) == expected, case


def test_qos_class_with_new_request() -> None:
    spec = {"containers": [container(cpu_request="500m", cpu_limit="1", memory="1Gi")]}
    assert qos_class(spec) == "Burstable"
    assert qos_class(spec, {"app": 1000}) == "Guaranteed"


@pytest.mark.parametrize(
    ("namespace", "workload", "expected"),
    [
        ("tracking", None, True),
        (None, "tracking", True),
        ("tracking", "off", False),
        ("off", "tracking", True),
        (None, None, False),
        ("yes", None, False),
        ("tracking", "yes", False),
    ],
)
def test_opted_in(namespace: str | None, workload: str | None, expected: bool) -> None:
    assert opted_in(namespace, workload) is expected


def test_label_problem() -> None:
    assert label_problem("tracking") is None
    assert label_problem("off") is None
    assert label_problem(None) is None
    problem = label_problem("true")
    assert problem is not None
    assert "'true'" in problem
    assert "'tracking'" in problem


def test_resize_patch() -> None:
    result = plan(
        pod(container("app"), container("side", cpu_request="1")),
        recommendation(containers=("app", "side")),
    )
    assert resize_patch(result) == {
        "metadata": {"resourceVersion": "42"},
        "spec": {
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "600m"}}},
                {"name": "side", "resources": {"requests": {"cpu": "600m"}}},
            ]
        },
    }


def test_change_note_names_bound() -> None:
    result = plan(pod(container(cpu_request="500m", cpu_limit="1")), recommendation(1500))
    note = change_note(result)
    assert "app 500m -> 1000m" in note
    assert "tracking request 1500m, limit bound" in note
    assert "deployment/web -n shop" in note


def test_applied_record_keeps_original() -> None:
    first = record_changes({}, [ContainerChange("app", 2000, 600, 600)], NOW)
    second = record_changes(first, [ContainerChange("app", 600, 900, 900)], NOW + 300)
    assert second == {"app": AppliedResize(NOW + 300, 600, 900, 2000)}
    assert decode_applied(encode_applied(second)) == second
    assert orjson.loads(encode_applied(second)) == {
        "v": 1,
        "containers": {"app": {"ts": round(NOW + 300), "old_m": 600, "new_m": 900, "orig_m": 2000}},
    }


@pytest.mark.parametrize("raw", ["{", '{"v":2,"containers":{}}', '{"v":1,"containers":{"a":{}}}'])
def test_applied_record_rejects(raw: str) -> None:
    with pytest.raises(InvalidAnnotationError, match="rightsize-applied"):
        decode_applied(raw)


def status_error(status: int, message: str) -> KubernetesError:
    body = orjson.dumps({"kind": "Status", "message": message, "code": status}).decode()
    return KubernetesError(f"PATCH /api/v1/x failed: HTTP {status}: {body}", status=status)


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (409, "conflict", "changed since it was read (HTTP 409 Conflict)"),
        (422, "rejected", "rejected the resize (HTTP 422): Pod is invalid"),
        (403, "forbidden", "grant patch on pods/resize"),
        (404, "not-found", "Kubernetes 1.33 or newer"),
        (500, "error", "resize failed"),
    ],
)
def test_describe_failure(status: int, kind: str, text: str) -> None:
    error = status_error(status, "Pod is invalid")
    assert classify_failure(error).value == kind
    assert text in describe_failure(error)


def test_describe_failure_cut_body() -> None:
    # KubeClient keeps the first 500 bytes of an error body, which can cut the JSON short.
    body = (
        '{"kind":"Status","message":"Pod \\"web\\" is invalid: QOS may not change","details":{"na'
    )
    error = KubernetesError(f"PATCH /x failed: HTTP 422: {body}", status=422)
    assert describe_failure(error) == (
        'the API server rejected the resize (HTTP 422): Pod "web" is invalid: QOS may not change'
    )
