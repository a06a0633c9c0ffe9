"""Revert planning: which containers get their original request back, the patches, the report."""

from typing import Any

import orjson
import pytest

from temper.annotations import ORIGINAL_REQUESTS, OriginalRequests
from temper.cli import build_parser, main
from temper.errors import KubernetesError
from tests.test_webhook_mutation import apply_json_patch
from webhook.revert import (
    PodRevert,
    annotation_removal_patch,
    describe_resize_failure,
    plan_pod,
    render_table,
    resize_patch,
    summarize,
)

RECORD = OriginalRequests(
    containers={"app": "1", "bare": None, "pinned": "1"},
    init_containers={"setup": "500m", "proxy": "250m"},
).encode()


def container(name: str, cpu_request: str | None, **fields: Any) -> dict[str, Any]:
    resources = {"requests": {"cpu": cpu_request}} if cpu_request else {}
    return {"name": name, "image": "registry.invalid/app:1", "resources": resources, **fields}


def mutated_pod(annotation: str = RECORD, phase: str = "Pending", **metadata: Any) -> Any:
    return {
        "metadata": {
            "name": "web",
            "namespace": "team-a",
            "uid": "uid-1",
            "annotations": {ORIGINAL_REQUESTS: annotation},
            **metadata,
        },
        "spec": {
            "initContainers": [
                container("setup", "300m"),
                container("proxy", "150m", restartPolicy="Always"),
            ],
            "containers": [
                container("app", "600m"),
                container("bare", None),
                container("pinned", "1000m"),
            ],
        },
        "status": {"phase": phase},
    }


def test_plan_lists_scaled_containers() -> None:
    plan = plan_pod(mutated_pod())
    assert plan.skip_reason is None
    assert [(r.list_key, r.index, r.name) for r in plan.restores] == [
        ("initContainers", 0, "setup"),
        ("initContainers", 1, "proxy"),
        ("containers", 0, "app"),
    ]
    assert [(r.current, r.original) for r in plan.restores] == [
        ("300m", "500m"),
        ("150m", "250m"),
        ("600m", "1"),
    ]


@pytest.mark.parametrize(
    ("case", "pod", "reason"),
    [
        ("succeeded", mutated_pod(phase="Succeeded"), "pod has terminated (Succeeded)"),
        ("failed", mutated_pod(phase="Failed"), "pod has terminated (Failed)"),
        ("deleting", mutated_pod(deletionTimestamp="2026-01-01T00:00:00Z"), "being deleted"),
        ("not JSON", mutated_pod(annotation="{"), "invalid annotation"),
        ("wrong version", mutated_pod(annotation='{"v":9,"cpu":{}}'), "invalid annotation"),
    ],
)
def test_plan_skips_pod(case: str, pod: Any, reason: str) -> None:
    plan = plan_pod(pod)
    assert plan.skip_reason is not None, case
    assert reason in plan.skip_reason, case


def test_plan_empty_when_already_original() -> None:
    pod = mutated_pod()
    # Written differently from the annotation but equal as quantities.
    requests = {"setup": "0.5", "proxy": "250m", "app": "1000m", "pinned": "1"}
    for entry in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        if entry["name"] in requests:
            entry["resources"] = {"requests": {"cpu": requests[entry["name"]]}}
    plan = plan_pod(pod)
    assert plan.skip_reason is None
    assert plan.restores == []


def test_resize_patch_restores_originals() -> None:
    pod = mutated_pod()
    result = apply_json_patch(pod, resize_patch(plan_pod(pod)))
    requests = [
        entry["resources"].get("requests", {}).get("cpu")
        for entry in result["spec"]["initContainers"] + result["spec"]["containers"]
    ]
    assert requests == ["500m", "250m", "1", None, "1000m"]


def test_resize_patch_tests_identity() -> None:
    operations = resize_patch(plan_pod(mutated_pod()))
    assert operations[0] == {"op": "test", "path": "/metadata/uid", "value": "uid-1"}
    assert {"op": "test", "path": "/spec/containers/0/name", "value": "app"} in operations


def test_annotation_removal_patch() -> None:
    pod = mutated_pod()
    result = apply_json_patch(pod, annotation_removal_patch(plan_pod(pod)))
    assert ORIGINAL_REQUESTS not in result["metadata"]["annotations"]


def status_error(status: int, message: str, *, truncate: int | None = None) -> KubernetesError:
    body = orjson.dumps(
        {"kind": "Status", "status": "Failure", "message": message, "code": status}
    ).decode()
    if truncate is not None:
        body = body[:truncate]
    return KubernetesError(f"PATCH /x/resize failed: HTTP {status}: {body}", status=status)


@pytest.mark.parametrize(
    ("case", "error", "pod_exists", "expected"),
    [
        ("not served", status_error(404, "the server could not find"), True, "not supported"),
        ("pod gone", status_error(404, 'pods "web" not found'), False, "no longer exists"),
        (
            "rejected",
            status_error(422, 'Pod "web" is invalid: QOS Class may not change'),
            True,
            'resize rejected (HTTP 422): Pod "web" is invalid: QOS Class may not change',
        ),
        (
            "truncated body",
            status_error(422, "x" * 600, truncate=500),
            True,
            "resize rejected (HTTP 422): xxx",
        ),
        ("forbidden", status_error(403, "cannot patch"), True, "grant patch on pods/resize"),
        ("conflict", status_error(409, "changed"), True, "run the command again"),
        ("unreachable", KubernetesError("API server unreachable"), True, "unreachable"),
    ],
)
def test_resize_failure_described(
    case: str, error: KubernetesError, pod_exists: bool, expected: str
) -> None:
    assert expected in describe_resize_failure(error, pod_exists), case


def test_dry_run_table_and_summary() -> None:
    plans = [plan_pod(mutated_pod()), plan_pod(mutated_pod(phase="Succeeded"))]
    table = render_table(plans, applied=False).splitlines()
    assert table[0].split() == [
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "CPU-REQUEST",
        "ORIGINAL",
        "ACTION",
    ]
    assert table[1].split()[:6] == ["team-a", "web", "setup", "(init)", "300m", "500m"]
    assert "would resize" in table[3]
    assert "skipped: pod has terminated" in table[4]
    summary = summarize(plans, applied=False)
    assert "1 pod (3 containers) to resize" in summary
    assert "1 pod skipped" in summary
    assert "add --apply" in summary


def test_applied_summary_counts_failures() -> None:
    done = PodRevert("team-a", "ok", "u1", RECORD, outcome="annotation removed")
    failed = PodRevert("team-a", "bad", "u2", RECORD, outcome="resize rejected", failed=True)
    assert summarize([done, failed], applied=True) == "reverted 1 pod, 1 failed, 0 skipped"
    assert "failed: resize rejected" in render_table([done, failed], applied=True)


@pytest.mark.parametrize(
    "arguments",
    [["webhook", "revert"], ["webhook", "revert", "--namespace", "a", "--all-namespaces"]],
    ids=["no scope", "both scopes"],
)
def test_revert_needs_one_scope(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "--namespace" in error
    assert "--all-namespaces" in error


def test_revert_keeps_options_before_action() -> None:
    arguments = ["webhook", "--kubeconfig", "admin.conf", "revert", "--namespace", "a"]
    args = build_parser().parse_args(arguments)
    assert args.kubeconfig == "admin.conf"
    assert args.namespace == "a"
