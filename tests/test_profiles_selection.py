"""Profile selection: annotation before image, image globs, custom dirs, bad values reported."""

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cgroups import CgroupLayout, CgroupVersion
from agent.podinfo import pod_info
from agent.profiles.catalog import image_repository, load_catalog, select_profile
from agent.profiles.resolver import ProfileResolver
from agent.settings import CgroupDriver
from agent.topology import Topology
from temper.annotations import PROFILE

LAYOUT = CgroupLayout(Path("/sys/fs/cgroup"), CgroupVersion.V2, CgroupDriver.SYSTEMD)
BUILTINS = load_catalog([])


def pod(
    *images: str, annotation: str | None = None, name: str = "db", tier: str = "temper-high"
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if annotation is not None:
        metadata["annotations"] = {PROFILE: annotation}
    return {
        "metadata": metadata,
        "spec": {
            "priorityClassName": tier,
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        },
        "status": {"phase": "Running", "qosClass": "Burstable"},
    }


def custom_profile(name: str, images: list[str], prefix: str = "etl_") -> dict[str, Any]:
    return {
        "name": name,
        "description": f"custom {name}",
        "match": {"images": images},
        "groups": [{"name": "io", "threads": [prefix], "treatment": "latency"}],
    }


def write(directory: Path, filename: str, data: Any) -> Path:
    path = directory / filename
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("mysql", "mysql-innodb"),
        ("mysql:8.4", "mysql-innodb"),
        ("docker.io/library/mysql:8.4", "mysql-innodb"),
        ("registry.local:5000/db/mysql@sha256:0123", "mysql-innodb"),
        ("mysqlrouter:8.4", None),
        ("eclipse-temurin:21-jre", "jvm-hotspot"),
        ("docker.io/library/openjdk:17", "jvm-hotspot"),
        ("nvcr.io/nvidia/pytorch:24.01-py3", "pytorch-dataloader"),
        ("pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", "pytorch-dataloader"),
        ("nginx:1.27", None),
    ],
)
def test_image_glob_selects_builtin(image: str, expected: str | None) -> None:
    selection = select_profile(pod(image), BUILTINS)
    assert (selection.profile.name if selection.profile else None) == expected


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("mysql", "mysql"),
        ("mysql:8.4", "mysql"),
        ("localhost:5000/mysql", "localhost:5000/mysql"),
        ("localhost:5000/db/mysql:8.4@sha256:ab", "localhost:5000/db/mysql"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_any_container_image_selects() -> None:
    selection = select_profile(pod("envoy:1.30", "mysql:8.4"), BUILTINS)
    assert selection.profile is not None
    assert selection.profile.name == "mysql-innodb"
    assert selection.reason == "image mysql:8.4"


def test_annotation_wins_over_image() -> None:
    selection = select_profile(pod("mysql:8.4", annotation="jvm-hotspot"), BUILTINS)
    assert selection.profile is not None
    assert selection.profile.name == "jvm-hotspot"
    assert selection.problem is None


def test_annotation_none_turns_profiles_off() -> None:
    selection = select_profile(pod("mysql:8.4", annotation="none"), BUILTINS)
    assert selection.profile is None
    assert selection.problem is None


def test_unknown_name_is_reported_and_image_decides() -> None:
    selection = select_profile(pod("mysql:8.4", annotation="mysql-v9"), BUILTINS)
    assert selection.problem is not None
    assert "'mysql-v9' names no known profile" in selection.problem
    assert "mysql-innodb" in selection.problem
    assert selection.profile is not None
    assert selection.profile.name == "mysql-innodb"


def test_garbage_annotation_is_reported() -> None:
    selection = select_profile(pod("nginx", annotation="My Profile!"), BUILTINS)
    assert selection.profile is None
    assert selection.problem is not None
    assert "'My Profile!' is not a profile name" in selection.problem


def test_custom_profile_replaces_builtin(tmp_path: Path) -> None:
    write(tmp_path, "mysql.yaml", custom_profile("mysql-innodb", ["mysql"], prefix="my_"))
    catalog = load_catalog([tmp_path])
    profile = catalog.get("mysql-innodb")
    assert profile is not None
    assert profile.source == str(tmp_path / "mysql.yaml")
    assert catalog.names.count("mysql-innodb") == 1


def test_custom_profiles_match_before_builtins(tmp_path: Path) -> None:
    write(tmp_path, "shop.yaml", custom_profile("shop-db", ["*/mysql"]))
    selection = select_profile(pod("docker.io/library/mysql:8.4"), load_catalog([tmp_path]))
    assert selection.profile is not None
    assert selection.profile.name == "shop-db"


def test_directories_keep_their_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write(second, "a.yaml", custom_profile("from-second", ["etl"]))
    write(first, "z.yaml", custom_profile("from-first", ["etl"]))
    selection = select_profile(pod("etl:1"), load_catalog([first, second]))
    assert selection.profile is not None
    assert selection.profile.name == "from-first"


def test_invalid_file_is_reported_others_load(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", custom_profile("etl", ["etl"]))
    bad = write(tmp_path, "bad.yml", custom_profile("broken", ["x"], prefix="io_*_thread"))
    write(tmp_path, "notes.txt", "not a profile")
    catalog = load_catalog([tmp_path])
    assert catalog.get("etl") is not None
    assert catalog.get("broken") is None
    assert len(catalog.problems) == 1
    assert catalog.problems[0].startswith(f"{bad}: groups[0].threads[0]:")


def test_duplicate_custom_name_first_wins(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", custom_profile("etl", ["etl"]))
    write(tmp_path, "b.yaml", custom_profile("etl", ["other"]))
    catalog = load_catalog([tmp_path])
    profile = catalog.get("etl")
    assert profile is not None
    assert profile.images == ("etl",)
    assert "name 'etl' is already used by" in catalog.problems[0]


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    catalog = load_catalog([tmp_path / "absent"])
    assert "profile directory not found" in catalog.problems[0]
    assert catalog.get("mysql-innodb") is not None


def resolve(resolver: ProfileResolver, *pods: dict[str, Any]) -> list[dict[str, Any]]:
    store = {f"ns/{p['metadata']['name']}": p for p in pods}
    infos = [pod_info(p) for p in pods]
    return resolver.profile_layers(store, infos, LAYOUT, Topology(cpus=8))


def test_bad_annotation_logged_once_with_pod(caplog: pytest.LogCaptureFixture) -> None:
    resolver = ProfileResolver([])
    bad = pod("nginx", annotation="no such profile", name="web")
    with caplog.at_level(logging.WARNING, logger="agent.profiles.resolver"):
        resolve(resolver, bad, pod("mysql:8.4"))
        resolve(resolver, bad, pod("mysql:8.4"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].__dict__["pod"] == "ns/web"
    assert "'no such profile'" in warnings[0].__dict__["problem"]


def test_bad_annotation_leaves_other_pods_profiled() -> None:
    resolver = ProfileResolver([])
    layers = resolve(resolver, pod("nginx", annotation="???", name="web"), pod("mysql:8.4"))
    assert [layer["name"] for layer in layers] == [
        "profile-exclusive",
        "profile-latency",
        "profile-yield",
    ]
    assert resolver.plan.applied == {"ns/db": "mysql-innodb"}


def test_resolver_rereads_changed_files(tmp_path: Path) -> None:
    resolver = ProfileResolver([tmp_path])
    etl = pod("etl:1", name="etl", tier="temper-normal")
    assert resolve(resolver, etl) == []
    path = write(tmp_path, "etl.yaml", custom_profile("etl", ["etl"]))
    layers = resolve(resolver, etl)
    assert layers[0]["matches"][0][1] == {"CommPrefix": "etl_"}
    path.write_text(yaml.safe_dump(custom_profile("etl", ["etl"], prefix="etl_net")))
    # Same size and a coarse file clock must not hide the change: move the mtime on.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    layers = resolve(resolver, etl)
    assert layers[0]["matches"][0][1] == {"CommPrefix": "etl_net"}


def test_resolver_logs_invalid_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "bad.yaml", "name: [unclosed")
    resolver = ProfileResolver([tmp_path])
    with caplog.at_level(logging.ERROR, logger="agent.profiles.resolver"):
        resolve(resolver, pod("mysql:8.4"))
        resolve(resolver, pod("mysql:8.4"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "invalid YAML" in errors[0].__dict__["problem"]
