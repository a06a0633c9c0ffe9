"""``temper demo`` end to end on its own control plane: the facts its report shows."""

from pathlib import Path

import pytest

from agent.validation import validate_layer_config
from temper.annotations import OriginalRequests
from temper.cli import main
from temper.demo.cli import render
from temper.demo.run import DemoResult, run_demo
from temper.quantity import cpu_millicores
from temper.tiers import Tier

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    return run_demo(tmp_path_factory.mktemp("demo"), nodes_per_group=3, node_cpus=4)


def test_demo_schedules_pods_of_all_five_tiers(demo_result: DemoResult) -> None:
    tiers = {pod["tier"] for pod in demo_result.pods}
    assert tiers == {tier.value for tier in Tier}
    assert all(pod["node"] != "(pending)" for pod in demo_result.pods)


def test_demo_mutates_non_critical_requests(demo_result: DemoResult) -> None:
    for pod in demo_result.pods:
        if pod["tier"] == "critical":
            assert pod["annotation"] == "-"
            assert pod["cpu_request_admitted"] == pod["cpu_request_original"]
            continue
        original = OriginalRequests.decode(pod["annotation"]).containers["main"]
        assert original == pod["cpu_request_original"]
        assert cpu_millicores(pod["cpu_request_admitted"]) < cpu_millicores(original)


def test_demo_layer_configs_pass_validation(demo_result: DemoResult) -> None:
    assert len(demo_result.nodes) == 6
    for node in demo_result.nodes:
        assert node["layers"], f"{node['node']} has no layer config"
        validate_layer_config(node["layers"], cpus=4)
        assert node["tier_load"] is not None
        assert node["scheduler"].startswith(("unsupported: ", "scx_layered", "stock"))


def test_demo_extender_changes_placement(demo_result: DemoResult) -> None:
    assert demo_result.placement_changes >= 1
    for score in demo_result.scores:
        assert all(isinstance(v, int) and 0 <= v <= 10 for v in score["scores"].values())


def test_demo_report_names_everything(demo_result: DemoResult) -> None:
    report = render(demo_result)
    for section in ("Pods", "Nodes", "Extender scores", "Placement"):
        assert section in report
    assert "payments-db" in report
    assert "layer critical" in report
    assert demo_result.workdir is not None
    assert (demo_result.workdir / "logs").is_dir()
    assert f"logs of this run: {demo_result.workdir}" in report


def test_demo_missing_binaries_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEMPER_CONTROLPLANE_BIN_DIR", str(tmp_path / "nothing-here"))
    code = main(["demo", "--workdir", str(tmp_path / "work")])
    assert code == 2
    error = capsys.readouterr().err
    assert "control-plane binaries not found" in error
    assert "scripts/setup.sh" in error
