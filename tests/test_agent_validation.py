"""The scx_layered config validator rejects what scx_layered rejects, and unknown keys."""

import copy
from typing import Any

import pytest

from agent.validation import LayerConfigError, validate_layer_config


def base() -> list[dict[str, Any]]:
    return [
        {
            "name": "critical",
            "matches": [[{"CgroupPrefix": "kubepods.slice/kubepods-podx.slice/"}]],
            "kind": {
                "Confined": {"util_range": [0.5, 0.8], "cpus_range": [1, 2], "protected": True}
            },
        },
        {
            "name": "low",
            "matches": [[{"CgroupPrefix": "kubepods.slice/kubepods-besteffort.slice/"}]],
            "kind": {"Open": {"weight": 50}},
        },
        {"name": "normal", "matches": [[]], "kind": {"Grouped": {"util_range": [0.6, 0.9]}}},
    ]


def test_base_config_is_valid() -> None:
    validate_layer_config(base(), cpus=4)


def mutate(path: list[Any], value: Any) -> list[dict[str, Any]]:
    config = copy.deepcopy(base())
    target: Any = config
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return config


DELETE = object()

CASES = [
    ("unknown-layer-key", [0, "nmae"], "x", "unknown key 'nmae'"),
    ("unknown-kind-key", [0, "kind", "Confined", "utl_range"], [0.1, 0.2], "unknown key"),
    ("util-range-inverted", [0, "kind", "Confined", "util_range"], [0.9, 0.5], "util_range"),
    ("util-range-missing", [0, "kind", "Confined", "util_range"], DELETE, "util_range is required"),
    ("cpus-range-inverted", [0, "kind", "Confined", "cpus_range"], [3, 1], "cpus_range"),
    ("confined-max-zero", [0, "kind", "Confined", "cpus_range"], [0, 0], "max >= 1"),
    ("cpus-over-node", [0, "kind", "Confined", "cpus_range"], [8, 8], "exceeds the node's 4"),
    (
        "frac-and-range",
        [0, "kind", "Confined", "cpus_range_frac"],
        [0.1, 0.5],
        "mutually exclusive",
    ),
    ("weight-too-big", [1, "kind", "Open", "weight"], 20000, "weight"),
    (
        "open-has-util-range",
        [1, "kind", "Open", "util_range"],
        [0.1, 0.2],
        "unknown key 'util_range'",
    ),
    ("kind-unknown", [1, "kind"], {"Shared": {}}, "kind"),
    ("kind-two-keys", [1, "kind"], {"Open": {}, "Grouped": {}}, "kind"),
    ("catch-all-not-last", [2, "matches"], [[{"CommPrefix": "x"}]], "catch-all"),
    ("empty-matches", [1, "matches"], [], "must have matches"),
    ("empty-and-block", [1, "matches"], [[]], "swallow"),
    ("leading-slash", [1, "matches"], [[{"CgroupPrefix": "/kubepods.slice/"}]], "leading slash"),
    ("comm-too-long", [1, "matches"], [[{"CommPrefix": "x" * 16}]], "at most 15"),
    ("unknown-match", [1, "matches"], [[{"CgroupGlob": "x"}]], "unknown match type"),
    (
        "match-two-keys",
        [1, "matches"],
        [[{"CommPrefix": "a", "PcommPrefix": "b"}]],
        "exactly one key",
    ),
    ("bad-regex", [1, "matches"], [[{"CgroupRegex": "("}]], "does not compile"),
    ("nice-out-of-range", [1, "matches"], [[{"NiceAbove": 40}]], "NiceAbove"),
    ("hint-with-others", [1, "matches"], [[{"HintEquals": 1}, {"CommPrefix": "a"}]], "HintEquals"),
    ("growth-unknown", [0, "kind", "Confined", "growth_algo"], "Fastest", "growth_algo"),
    ("preempt-with-disallow", [0, "kind", "Confined", "disallow_preempt_after_us"], 5, "preempt"),
    ("duplicate-name", [1, "name"], "critical", "duplicate name"),
    ("long-name", [1, "name"], "x" * 200, "longer than"),
    ("disallow-negative", [1, "kind", "Open", "disallow_open_after_us"], -1, "disallow"),
]


@pytest.mark.parametrize(("scenario", "path", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_validator_rejects(scenario: str, path: list[Any], value: Any, message: str) -> None:
    config = mutate(path, value)
    if scenario == "preempt-with-disallow":
        config[0]["kind"]["Confined"]["preempt"] = True
    with pytest.raises(LayerConfigError) as raised:
        validate_layer_config(config, cpus=4)
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_validator_rejects_too_many_layers() -> None:
    layers = [
        {"name": f"l{i}", "matches": [[{"CommPrefix": f"c{i}"}]], "kind": {"Open": {}}}
        for i in range(16)
    ]
    layers.append({"name": "rest", "matches": [[]], "kind": {"Open": {}}})
    with pytest.raises(LayerConfigError, match="17 layers"):
        validate_layer_config(layers)


def test_validator_rejects_too_many_or_blocks() -> None:
    config = base()
    config[1]["matches"] = [[{"CommPrefix": f"c{i}"}] for i in range(33)]
    with pytest.raises(LayerConfigError, match="33 OR blocks"):
        validate_layer_config(config)


def test_validator_rejects_too_many_regexes() -> None:
    config = base()
    config[1]["matches"] = [[{"CgroupRegex": f"^/a{i}$"}] for i in range(17)]
    with pytest.raises(LayerConfigError, match="17 CgroupRegex"):
        validate_layer_config(config)


def test_validator_rejects_non_list() -> None:
    with pytest.raises(LayerConfigError, match="JSON array"):
        validate_layer_config({"layers": []})


def test_validator_lists_every_problem() -> None:
    config = mutate([0, "nmae"], "x")
    config[1]["kind"]["Open"]["weight"] = 0
    with pytest.raises(LayerConfigError) as raised:
        validate_layer_config(config)
    assert len(raised.value.problems) == 2


def open_layer(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "matches": [[{"CommPrefix": name}]], "kind": {"Open": fields}}


def test_validator_rejects_open_preempt_beside_open() -> None:
    config = base()
    config.insert(0, open_layer("urgent", preempt=True))
    with pytest.raises(LayerConfigError) as raised:
        validate_layer_config(config, cpus=4)
    [problem] = raised.value.problems
    assert "layer[0] 'urgent'" in problem
    assert "layer[2] 'low'" in problem
    assert "E2BIG" in problem


def test_validator_rejects_open_preempt_beside_open_catch_all() -> None:
    config = [
        open_layer("urgent", preempt=True),
        {"name": "rest", "matches": [[]], "kind": {"Open": {}}},
    ]
    with pytest.raises(LayerConfigError, match="E2BIG"):
        validate_layer_config(config)


def test_validator_accepts_open_preempt_without_other_open() -> None:
    config = base()
    config[1]["kind"]["Open"]["preempt"] = True
    validate_layer_config(config, cpus=4)


def test_validator_accepts_open_preempt_false_beside_open() -> None:
    config = base()
    config.insert(0, open_layer("quiet", preempt=False))
    validate_layer_config(config, cpus=4)
