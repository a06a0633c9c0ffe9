"""The temper.codes/recommendation annotation, per-workload merging and the patch to apply it."""

from dataclasses import replace
from typing import Any

import orjson
import pytest

from rightsizer.annotation import Status, WorkloadRecommendation
from rightsizer.history import ContainerKey
from rightsizer.owners import UnknownWorkloadKindError, Workload, parse_workload
from rightsizer.recommend import ContainerRecommendation, RecommendationPolicy, recommend_container
from rightsizer.report import render_table
from rightsizer.workloads import current_cpu, kubectl_patch_command, merge, resources_patch
from temper.errors import InvalidAnnotationError
from tests.threadhistory import Thread, history

POLICY = RecommendationPolicy(window_seconds=600.0)
LIGHT = [Thread(f"worker-{i}", 0.03) for i in range(4)]
WEB = Workload("Deployment", "shop", "web")


def pod_recommendation(pod: str, threads: list[Thread]) -> ContainerRecommendation:
    recommendation = recommend_container(history(threads), POLICY, 600.0)
    return replace(recommendation, key=ContainerKey("shop", pod, f"uid-{pod}", "app"))


def deployment(cpu_request: str | None = "2", cpu_limit: str | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if cpu_request is not None:
        resources["requests"] = {"cpu": cpu_request, "memory": "1Gi"}
    if cpu_limit is not None:
        resources["limits"] = {"cpu": cpu_limit}
    container = {"name": "app", "image": "app:1", "resources": resources}
    return {"spec": {"template": {"spec": {"containers": [container]}}}}


HOT_POD = pod_recommendation("web-1", [Thread("evloop", 0.95), *LIGHT])
CALM_POD = pod_recommendation("web-2", LIGHT)


def merged() -> WorkloadRecommendation:
    return merge([HOT_POD, CALM_POD], deployment(), "Deployment", now_seconds=1000.0)


def test_merge_takes_busiest_pod() -> None:
    advice = merged().containers["app"]
    assert advice.request_millicores == 1120
    assert advice.current_request_millicores == 2000
    assert advice.current_limit_millicores is None


def test_merge_counts_pods_per_finding() -> None:
    recommendation = merged()
    assert recommendation.pods == 2
    [finding] = recommendation.containers["app"].findings
    assert (finding.kind, finding.group, finding.pods) == ("hot-thread", "evloop", 1)


def test_merge_takes_lowest_confidence() -> None:
    short = replace(CALM_POD, confidence=0.3)
    recommendation = merge([HOT_POD, short], deployment(), "Deployment", 1000.0)
    assert recommendation.containers["app"].confidence == 0.3


@pytest.mark.parametrize(
    ("request_quantity", "limit_quantity", "expected"),
    [("2", None, (2000, None)), ("250m", "1.5", (250, 1500)), (None, None, (None, None))],
)
def test_current_cpu_reads_template(
    request_quantity: str | None, limit_quantity: str | None, expected: tuple[int, int]
) -> None:
    template = deployment(request_quantity, limit_quantity)["spec"]["template"]
    assert current_cpu(template)["app"] == expected


def test_annotation_is_compact_json_with_version() -> None:
    raw = merged().encode()
    value = orjson.loads(raw)
    assert raw == orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    assert value["v"] == 1
    assert value["status"] == "proposed"
    assert value["containers"]["app"]["req_m"] == 1120
    assert value["window"] == {"start": 0, "end": 600, "observed_s": 600.0}


def test_annotation_round_trip() -> None:
    original = merged().decide(Status.ACCEPTED, 2000.0, "applied in PR 12")
    decoded = WorkloadRecommendation.decode(original.encode())
    assert decoded.status is Status.ACCEPTED
    assert decoded.note == "applied in PR 12"
    assert decoded.decided_seconds == 2000.0
    assert decoded.containers == original.containers


def test_same_values_ignore_review_state() -> None:
    original = merged()
    assert original.decide(Status.DISMISSED, 2000.0, None).same_values(original)
    louder = merge([HOT_POD, HOT_POD], deployment(), "Deployment", 1000.0)
    assert louder.same_values(original)
    calmer = merge([CALM_POD], deployment(), "Deployment", 1000.0)
    assert not calmer.same_values(original)


@pytest.mark.parametrize(
    ("case", "raw", "message"),
    [
        ("not JSON", "{", "not valid JSON"),
        ("version 2", '{"v": 2}', "v=2 is not supported"),
        ("no window", '{"v": 1, "ts": 1, "status": "proposed", "pods": 1}', "schema v1"),
    ],
)
def test_annotation_invalid(case: str, raw: str, message: str) -> None:
    with pytest.raises(InvalidAnnotationError, match=message):
        WorkloadRecommendation.decode(raw)


def test_patch_sets_template_resources() -> None:
    patch = resources_patch(WEB, merged())
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert containers == [{"name": "app", "resources": {"requests": {"cpu": "1120m"}}}]


def test_patch_cronjob_goes_through_job_template() -> None:
    patch = resources_patch(Workload("CronJob", "shop", "nightly"), merged())
    assert "containers" in patch["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_kubectl_command_names_workload() -> None:
    command = kubectl_patch_command(WEB, merged())
    assert command.startswith("kubectl patch deployment web -n shop --type strategic -p '")
    body = command.split(" -p ", 1)[1].strip("'")
    assert orjson.loads(body) == resources_patch(WEB, merged())


def test_kubectl_command_resizes_bare_pod() -> None:
    command = kubectl_patch_command(Workload("Pod", "shop", "web-1"), merged())
    assert command.startswith("kubectl patch pod web-1 -n shop --subresource resize ")


@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        ("deployment/web", "Deployment"),
        ("Deployments/web", "Deployment"),
        ("statefulset/db", "StatefulSet"),
        ("daemonsets/agent", "DaemonSet"),
        ("job/backup", "Job"),
    ],
)
def test_parse_workload(reference: str, kind: str) -> None:
    assert parse_workload(reference, "shop").kind == kind


@pytest.mark.parametrize("reference", ["deployment", "service/web", "deployment/"])
def test_parse_workload_invalid(reference: str) -> None:
    with pytest.raises(UnknownWorkloadKindError, match="expected KIND/NAME"):
        parse_workload(reference, "shop")


def test_annotation_carries_tracking_request() -> None:
    tracked = replace(CALM_POD, tracking_request_millicores=150)
    recommendation = merge([HOT_POD, tracked], deployment(), "Deployment", 1000.0, 300.0)
    value = orjson.loads(recommendation.encode())
    # The tracking request is the maximum over the pods, like the reviewed one.
    assert value["containers"]["app"]["trk_req_m"] == HOT_POD.tracking_request_millicores
    assert value["trk_s"] == 300
    decoded = WorkloadRecommendation.decode(recommendation.encode())
    assert decoded.tracking_seconds == 300.0
    assert decoded.containers == recommendation.containers


def test_annotation_without_tracking_fields_decodes() -> None:
    value = orjson.loads(merged().encode())
    del value["containers"]["app"]["trk_req_m"]
    decoded = WorkloadRecommendation.decode(orjson.dumps(value).decode())
    assert decoded.containers["app"].tracking_request_millicores is None
    assert decoded.tracking_seconds is None


def test_tracking_request_does_not_reset_review() -> None:
    original = merged().decide(Status.ACCEPTED, 2000.0, None)
    moved = replace(CALM_POD, tracking_request_millicores=CALM_POD.request_millicores + 50)
    fresh = merge([HOT_POD, moved], deployment(), "Deployment", 3000.0, 300.0)
    assert fresh.same_values(original)


def test_report_lists_tracking_request() -> None:
    recommendation = merge([HOT_POD, CALM_POD], deployment(), "Deployment", 1000.0, 300.0)
    text = render_table([(WEB, recommendation)])
    tracking = recommendation.containers["app"].tracking_request_millicores
    assert "TRACKING" in text.splitlines()[0]
    assert f"tracking request {tracking}m: only for an automation" in text
    assert "within 5 min" in text
