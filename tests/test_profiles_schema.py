"""Workload profile schema: what it accepts, and every rejection with its file, field and fix."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.profiles.catalog import builtin_profiles
from agent.profiles.schema import (
    ProfileError,
    Treatment,
    load_profile,
    load_profile_text,
    parse_profile,
)


def profile_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "db",
        "description": "A database",
        "match": {"images": ["db", "*/db"]},
        "groups": [
            {"name": "io", "threads": ["io_rd", "io_wr*"], "treatment": "latency"},
            {"name": "purge", "threads": ["purge"], "treatment": "yield"},
        ],
    }
    data.update(changes)
    return data


def group(threads: list[Any], treatment: str = "latency", name: str = "g") -> dict[str, Any]:
    return {"name": name, "threads": threads, "treatment": treatment}


def test_valid_profile_parses() -> None:
    profile = parse_profile(profile_data(), "db.yaml")
    assert profile.name == "db"
    assert profile.images == ("db", "*/db")
    assert [g.treatment for g in profile.groups] == [Treatment.LATENCY, Treatment.YIELD]


def test_trailing_star_is_stripped() -> None:
    profile = parse_profile(profile_data(), "db.yaml")
    assert profile.groups[0].prefixes == ("io_rd", "io_wr")


def test_fifteen_byte_prefix_is_accepted() -> None:
    data = profile_data(groups=[group(["C2 CompilerThre"])])
    assert parse_profile(data, "jvm.yaml").groups[0].prefixes == ("C2 CompilerThre",)


def test_match_is_optional() -> None:
    data = profile_data()
    del data["match"]
    assert parse_profile(data, "db.yaml").images == ()


def test_earlier_specific_prefix_is_excluded_later() -> None:
    data = profile_data(
        groups=[
            group(["wrk_io"], "default", "io"),
            group(["wrk_"], "yield", "workers"),
        ]
    )
    profile = parse_profile(data, "etl.yaml")
    assert profile.exclusions(1, "wrk_") == ("wrk_io",)
    assert profile.exclusions(0, "wrk_io") == ()


REJECTIONS = [
    (
        "glob inside",
        {"groups": [group(["io_*_thread"])]},
        "x.yaml: groups[0].threads[0]: 'io_*_thread' has a '*' inside; scx_layered matches "
        "thread names by prefix only: use 'io_'",
    ),
    ("question mark", {"groups": [group(["io_r?"])]}, "'io_r?' has a '?' inside"),
    ("bracket", {"groups": [group(["io_[rw]"])]}, "has a '[' inside; scx_layered"),
    ("leading star", {"groups": [group(["*writer"])]}, "name the fixed start of the thread"),
    ("two trailing stars", {"groups": [group(["io_**"])]}, "use 'io_'"),
    ("lone star", {"groups": [group(["*"])]}, "'*' matches every thread"),
    ("empty prefix", {"groups": [group([""])]}, "'' matches every thread"),
    (
        "too long",
        {"groups": [group(["C2 CompilerThread"])]},
        "groups[0].threads[0]: 'C2 CompilerThread' is 17 bytes, but the kernel keeps only the "
        "first 15 bytes of a thread name (comm), so it never matches: use 'C2 CompilerThre'",
    ),
    ("too long in bytes", {"groups": [group(["é" * 8])]}, "is 16 bytes"),
    ("control character", {"groups": [group(["io\n"])]}, "contains a control character"),
    ("not a string", {"groups": [group([123])]}, "threads[0]: expected a string, got 123"),
    ("no threads", {"groups": [group([])]}, "groups[0].threads: expected a non-empty list"),
    (
        "unknown treatment",
        {"groups": [group(["io"], "fast")]},
        "groups[0].treatment: 'fast' is not one of exclusive, latency, yield, default",
    ),
    ("unknown top key", {"groupz": []}, "x.yaml: groupz: unknown key; expected one of name"),
    (
        "unknown group key",
        {"groups": [{**group(["io"]), "thread": ["x"]}]},
        "groups[0].thread: unknown key",
    ),
    ("bad name", {"name": "MySQL"}, "name: 'MySQL' is not a valid name"),
    ("missing name", {"name": None}, "name: missing"),
    ("reserved name", {"name": "none"}, "'none' is reserved"),
    ("bad group name", {"groups": [group(["io"], name="IO threads")]}, "groups[0].name: 'IO"),
    ("missing description", {"description": " "}, "description: missing"),
    ("no groups", {"groups": []}, "groups: expected a non-empty list"),
    ("group not a mapping", {"groups": ["io"]}, "groups[0]: expected a mapping"),
    (
        "duplicate group name",
        {"groups": [group(["a"], name="g"), group(["b"], name="g")]},
        "groups[1].name: 'g' is used twice",
    ),
    (
        "duplicate prefix",
        {"groups": [group(["io_"], name="a"), group(["io_"], "yield", "b")]},
        "groups[1].threads[0]: 'io_' is already listed at groups[0].threads[0]",
    ),
    (
        "shadowed prefix",
        {"groups": [group(["ib_"], "yield", "all"), group(["ib_io_"], "latency", "io")]},
        "groups[1].threads[0]: 'ib_io_' never takes effect: groups[0] (all) comes first and "
        "its prefix 'ib_' covers every thread this one matches; move this group above groups[0]",
    ),
    (
        "overlap in one group",
        {"groups": [group(["ib_io_rd", "ib_io_"])]},
        "'ib_io_' covers both: remove the longer one",
    ),
    (
        "too many prefixes for one layer",
        {"groups": [group([f"t{i:02d}_" for i in range(33)])]},
        "33 thread prefixes have treatment 'latency', but one layer holds at most 32",
    ),
    (
        "too many exclusions",
        {
            "groups": [
                group([f"w{i:02d}" for i in range(25)], "default", "specific"),
                group(["w"], "yield", "rest"),
            ]
        },
        "'w' has 25 more specific prefixes in earlier groups",
    ),
    ("match not a mapping", {"match": ["db"]}, "match: expected a mapping with 'images'"),
    ("images not a list", {"match": {"images": "db"}}, "match.images: expected a list"),
    ("empty image glob", {"match": {"images": [""]}}, "match.images[0]: '' is not an image"),
    ("unknown match key", {"match": {"labels": {}}}, "match.labels: unknown key"),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [(changes, expected) for _, changes, expected in REJECTIONS],
    ids=[case for case, _, _ in REJECTIONS],
)
def test_schema_rejects(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProfileError) as error:
        parse_profile(profile_data(**changes), "x.yaml")
    assert any(expected in problem for problem in error.value.problems), error.value.problems


def test_every_problem_is_reported_at_once() -> None:
    data = profile_data(name="Bad", groups=[group(["a*b"]), group(["x"], "fast", "h")])
    with pytest.raises(ProfileError) as error:
        parse_profile(data, "x.yaml")
    assert len(error.value.problems) == 3


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ProfileError, match=r"x\.yaml: expected a mapping"):
        parse_profile(["db"], "x.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("name: [unclosed", "x.yaml: invalid YAML"), ("", "x.yaml: the file is empty")],
    ids=["syntax", "empty"],
)
def test_text_rejects(text: str, expected: str) -> None:
    with pytest.raises(ProfileError, match=expected):
        load_profile_text(text, "x.yaml")


def test_file_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(profile_data(groups=[group(["io_*_thread"])])))
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert error.value.problems[0].startswith(f"{path}: groups[0].threads[0]:")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read the file"):
        load_profile(tmp_path / "absent.yaml")


def test_builtins_are_valid() -> None:
    names = [p.name for p in builtin_profiles()]
    assert names == ["jvm-hotspot", "mysql-innodb", "pytorch-dataloader"]


def test_builtin_files_cite_sources() -> None:
    directory = Path(__file__).parent.parent / "agent/profiles/builtin"
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        assert "read in " in text, f"{path.name} does not say where its thread names come from"
