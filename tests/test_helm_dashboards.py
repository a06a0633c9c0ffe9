"""The chart ships the generated Grafana dashboards in a ConfigMap."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from temper.controlplane import find_binaries

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "temper"

pytestmark = pytest.mark.controlplane


def render(*values: str) -> list[dict[str, object]]:
    command = [str(find_binaries().helm), "template", "t", str(CHART), "-n", "temper"]
    for value in values:
        command += ["--set", value]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return [doc for doc in yaml.safe_load_all(output.stdout) if doc]


def dashboards_config_map(documents: list[dict[str, object]]) -> dict[str, object] | None:
    for document in documents:
        metadata = document.get("metadata") or {}
        if document.get("kind") == "ConfigMap" and str(metadata.get("name", "")).endswith(  # type: ignore[union-attr]
            "-dashboards"
        ):
            return document
    return None


def test_dashboards_config_map_holds_every_dashboard() -> None:
    config_map = dashboards_config_map(render())
    assert config_map is not None
    data = config_map["data"]
    assert isinstance(data, dict)
    expected = sorted(path.name for path in (CHART / "dashboards").glob("*.json"))
    assert sorted(data) == expected
    for name, content in data.items():
        dashboard = json.loads(content)
        assert dashboard["panels"], f"{name} has no panels"
    labels = config_map["metadata"]["labels"]  # type: ignore[index]
    assert labels["grafana_dashboard"] == "1"


def test_dashboards_can_be_turned_off() -> None:
    assert dashboards_config_map(render("monitoring.grafanaDashboards.enabled=false")) is None
