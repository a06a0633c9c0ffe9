"""Validate an scx_layered layer config against the rules scx_layered enforces, and stricter.

scx_layered (checked against its 1.1.x source) parses the config with serde and then runs
``verify_layer_specs``; serde silently ignores unknown keys, so a typo would leave a default
in place. This validator restates every documented check and also rejects unknown keys,
empty match blocks outside the catch-all, and values that scx_layered would clamp.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_LAYERS = 16
MAX_OR_BLOCKS = 32
MAX_AND_CONDITIONS = 26
MAX_CGROUP_REGEXES = 16
MAX_NAME_BYTES = 127
MAX_TEMPLATE_NAME_BYTES = 63
MAX_CGROUP_STRING_BYTES = 4096
MAX_COMM_BYTES = 15
# Values are multiplied by 1000 inside scx_layered; keep them far from u64 overflow.
MAX_DISALLOW_US = 18_000_000_000_000_000

KINDS = ("Confined", "Grouped", "Open")
GROWTH_ALGOS = frozenset(
    {
        "Sticky", "Linear", "Reverse", "Random", "Topo", "RoundRobin", "BigLittle", "LittleBig",
        "NodeSpread", "NodeSpreadReverse", "NodeSpreadRandom", "CpuSetSpread",
        "CpuSetSpreadReverse", "CpuSetSpreadRandom", "RandomTopo", "StickyDynamic",
    }
)  # fmt: skip
PLACEMENTS = frozenset({"Standard", "Sticky", "Floating"})

_STRING_MATCHES = {
    "CgroupPrefix": MAX_CGROUP_STRING_BYTES,
    "CgroupSuffix": MAX_CGROUP_STRING_BYTES,
    "CgroupContains": MAX_CGROUP_STRING_BYTES,
    "CgroupRegex": MAX_CGROUP_STRING_BYTES,
    "CommPrefix": MAX_COMM_BYTES,
    "CommPrefixExclude": MAX_COMM_BYTES,
    "PcommPrefix": MAX_COMM_BYTES,
    "PcommPrefixExclude": MAX_COMM_BYTES,
    "CmdJoin": MAX_COMM_BYTES,
}
_INT_MATCHES = {
    "NiceAbove": (-20, 19),
    "NiceBelow": (-20, 20),
    "NiceEquals": (-20, 19),
    "UIDEquals": (0, 2**32 - 1),
    "GIDEquals": (0, 2**32 - 1),
    "PIDEquals": (0, 2**32 - 1),
    "PPIDEquals": (0, 2**32 - 1),
    "TGIDEquals": (0, 2**32 - 1),
    "NSEquals": (0, 2**32 - 1),
    "HintEquals": (0, 1024),
    "NumaNode": (0, 2**32 - 1),
}
_BOOL_MATCHES = frozenset({"IsGroupLeader", "IsKthread", "UsedGpuTid", "UsedGpuPid"})
_FRACTION_MATCHES = frozenset({"SystemCpuUtilBelow", "DsqInsertBelow"})

_COMMON_FIELDS: dict[str, str] = {
    "slice_us": "uint",
    "min_exec_us": "uint",
    "yield_ignore": "fraction_any",
    "fifo": "bool",
    "preempt": "bool",
    "preempt_first": "bool",
    "exclusive": "bool",
    "weight": "weight",
    "disallow_open_after_us": "disallow",
    "disallow_preempt_after_us": "disallow",
    "xllc_mig_min_us": "float",
    "growth_algo": "growth",
    "perf": "perf",
    "idle_resume_us": "uint",
    "nodes": "uint_list",
    "llcs": "uint_list",
    "placement": "placement",
    "skip_remote_node": "bool",
    "prev_over_idle_core": "bool",
    "member_expire_ms": "uint",
    "util_peak_half_life_ms": "uint",
    "xnuma_threshold": "float_pair",
    "xnuma_threshold_delta": "float_pair",
}
_OWNED_FIELDS: dict[str, str] = {
    "util_range": "util_range",
    "cpus_range": "cpus_range",
    "cpus_range_frac": "frac_pair",
    "protected": "bool",
    "membw_gb": "float",
}
_KIND_FIELDS: dict[str, dict[str, str]] = {
    "Confined": {**_COMMON_FIELDS, **_OWNED_FIELDS},
    "Grouped": {
        **_COMMON_FIELDS,
        **_OWNED_FIELDS,
        "util_includes_open_cputime": "bool",
        "idle_confined": "bool",
    },
    "Open": dict(_COMMON_FIELDS),
}
_LAYER_FIELDS = frozenset({"name", "comment", "template", "matches", "kind"})


class LayerConfigError(ValueError):
    """The config breaks one or more rules; ``problems`` lists each with its location."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid scx_layered config:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(where: str, kind: str, value: Any, problems: list[str]) -> None:
    ok = True
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "uint":
        ok = _is_int(value) and value >= 0
    elif kind in ("float", "fraction_any"):
        ok = _is_number(value)
    elif kind == "weight":
        ok = _is_int(value) and 1 <= value <= 10000
    elif kind == "disallow":
        ok = _is_int(value) and 0 <= value <= MAX_DISALLOW_US
    elif kind == "perf":
        ok = _is_int(value) and 0 <= value <= 1024
    elif kind == "growth":
        ok = value in GROWTH_ALGOS
    elif kind == "placement":
        ok = value in PLACEMENTS
    elif kind == "uint_list":
        ok = isinstance(value, list) and all(_is_int(v) and v >= 0 for v in value)
        ok = ok and len(set(value)) == len(value)
    elif kind == "float_pair":
        ok = isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
    elif kind == "frac_pair":
        ok = isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
        ok = ok and 0 <= value[0] <= value[1] <= 1
    elif kind == "util_range":
        ok = isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
        ok = ok and 0 <= value[0] < value[1]
    elif kind == "cpus_range":
        ok = isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)
        ok = ok and 0 <= value[0] <= value[1]
    if not ok:
        problems.append(f"{where}: invalid value {value!r} ({_EXPECTED[kind]})")


_EXPECTED = {
    "bool": "expected true or false",
    "uint": "expected an integer >= 0",
    "float": "expected a number",
    "fraction_any": "expected a number",
    "weight": "expected an integer from 1 to 10000",
    "disallow": f"expected an integer from 0 to {MAX_DISALLOW_US}",
    "perf": "expected an integer from 0 to 1024",
    "growth": f"expected one of {', '.join(sorted(GROWTH_ALGOS))}",
    "placement": f"expected one of {', '.join(sorted(PLACEMENTS))}",
    "uint_list": "expected a list of distinct integers >= 0",
    "float_pair": "expected [number, number]",
    "frac_pair": "expected [lo, hi] with 0 <= lo <= hi <= 1",
    "util_range": "expected [lo, hi] with 0 <= lo < hi",
    "cpus_range": "expected [min, max] integers with 0 <= min <= max",
}


def _check_match(where: str, match: Any, problems: list[str]) -> str | None:
    if not isinstance(match, dict) or len(match) != 1:
        problems.append(f"{where}: a match must be an object with exactly one key, got {match!r}")
        return None
    ((key, value),) = match.items()
    if key in _STRING_MATCHES:
        if not isinstance(value, str):
            problems.append(f"{where}: {key} must be a string, got {value!r}")
        elif len(value.encode()) > _STRING_MATCHES[key]:
            problems.append(
                f"{where}: {key} value is {len(value.encode())} bytes, at most "
                f"{_STRING_MATCHES[key]} allowed"
            )
        elif key.startswith("Cgroup") and key != "CgroupRegex" and value.startswith("/"):
            problems.append(
                f"{where}: {key} {value!r} starts with '/', but scx_layered matches paths "
                "without a leading slash; drop it"
            )
        elif key == "CgroupRegex":
            try:
                re.compile(value)
            except re.error as error:
                problems.append(f"{where}: CgroupRegex {value!r} does not compile: {error}")
    elif key in _INT_MATCHES:
        low, high = _INT_MATCHES[key]
        if not _is_int(value) or not low <= value <= high:
            problems.append(f"{where}: {key} must be an integer from {low} to {high}")
    elif key in _BOOL_MATCHES:
        if not isinstance(value, bool):
            problems.append(f"{where}: {key} must be true or false, got {value!r}")
    elif key in _FRACTION_MATCHES:
        if not _is_number(value) or not 0 <= value <= 1:
            problems.append(f"{where}: {key} must be a number from 0 to 1, got {value!r}")
    elif key == "NSPIDEquals":
        if not (isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))):
            problems.append(f"{where}: NSPIDEquals must be [namespace id, pid]")
    elif key == "AvgRuntime":
        if not (isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))):
            problems.append(f"{where}: AvgRuntime must be [min_us, max_us]")
    else:
        problems.append(f"{where}: unknown match type {key!r}")
        return None
    return str(key)


def _check_matches(where: str, matches: Any, terminal: bool, problems: list[str]) -> int:
    """Check a layer's OR-of-ANDs; return how many CgroupRegex rules it uses."""
    if not isinstance(matches, list):
        problems.append(f"{where}.matches: expected a list of lists, got {matches!r}")
        return 0
    if terminal:
        if matches != [[]]:
            problems.append(f"{where}: the last layer is the catch-all; its matches must be [[]]")
        return 0
    if not matches:
        problems.append(f"{where}: a layer other than the last must have matches")
        return 0
    if len(matches) > MAX_OR_BLOCKS:
        problems.append(f"{where}: {len(matches)} OR blocks, at most {MAX_OR_BLOCKS} allowed")
    regexes = 0
    for index, block in enumerate(matches):
        block_where = f"{where}.matches[{index}]"
        if not isinstance(block, list):
            problems.append(f"{block_where}: expected a list of matches, got {block!r}")
            continue
        if not block:
            problems.append(
                f"{block_where}: an empty AND block matches every task and would swallow all "
                "later layers; only the last layer may match everything"
            )
        if len(block) > MAX_AND_CONDITIONS:
            problems.append(
                f"{block_where}: {len(block)} conditions, at most {MAX_AND_CONDITIONS} allowed"
            )
        keys = [_check_match(f"{block_where}[{i}]", m, problems) for i, m in enumerate(block)]
        regexes += keys.count("CgroupRegex")
        hints = keys.count("HintEquals")
        if hints > 1 or (hints == 1 and any(k not in _HINT_COMPANIONS for k in keys)):
            problems.append(
                f"{block_where}: HintEquals must stand alone, or with one "
                "SystemCpuUtilBelow/DsqInsertBelow"
            )
        if hints == 0 and any(k in _FRACTION_MATCHES for k in keys):
            problems.append(f"{block_where}: SystemCpuUtilBelow/DsqInsertBelow need HintEquals")
    return regexes


_HINT_COMPANIONS = frozenset({"HintEquals", *_FRACTION_MATCHES})


def _check_kind(where: str, kind: Any, problems: list[str]) -> None:
    if not isinstance(kind, dict) or len(kind) != 1 or next(iter(kind)) not in KINDS:
        problems.append(f"{where}.kind: expected one of {{Confined|Grouped|Open: {{...}}}}")
        return
    ((kind_name, body),) = kind.items()
    kind_where = f"{where}.kind.{kind_name}"
    if not isinstance(body, dict):
        problems.append(f"{kind_where}: expected an object, got {body!r}")
        return
    allowed = _KIND_FIELDS[kind_name]
    for key, value in body.items():
        if key not in allowed:
            problems.append(
                f"{kind_where}: unknown key {key!r} (scx_layered would ignore it silently)"
            )
            continue
        _check_value(f"{kind_where}.{key}", allowed[key], value, problems)
    if kind_name in ("Confined", "Grouped") and "util_range" not in body:
        problems.append(f"{kind_where}: util_range is required")
    if "cpus_range" in body and "cpus_range_frac" in body:
        problems.append(f"{kind_where}: cpus_range and cpus_range_frac are mutually exclusive")
    cpus_range = body.get("cpus_range")
    if (
        kind_name == "Confined"
        and isinstance(cpus_range, list)
        and len(cpus_range) == 2
        and _is_int(cpus_range[1])
        and cpus_range[1] < 1
    ):
        problems.append(f"{kind_where}.cpus_range: a Confined layer needs max >= 1")
    if body.get("preempt") is True and (
        "disallow_open_after_us" in body or "disallow_preempt_after_us" in body
    ):
        problems.append(
            f"{kind_where}: preempt forces disallow_*_after_us to infinity; remove them"
        )


def validate_layer_config(config: Any, *, cpus: int | None = None) -> None:
    """Raise LayerConfigError listing every problem, or return when the config is valid.

    ``cpus`` (the node's CPU count) enables the checks of ``cpus_range`` against it.
    """
    problems: list[str] = []
    if not isinstance(config, list):
        raise LayerConfigError([f"top level: expected a JSON array of layers, got {config!r}"])
    if not 1 <= len(config) <= MAX_LAYERS:
        problems.append(f"top level: {len(config)} layers, expected 1 to {MAX_LAYERS}")
    names: set[str] = set()
    regexes = 0
    for index, layer in enumerate(config):
        where = f"layer[{index}]"
        if not isinstance(layer, Mapping):
            problems.append(f"{where}: expected an object, got {layer!r}")
            continue
        for key in layer:
            if key not in _LAYER_FIELDS:
                problems.append(
                    f"{where}: unknown key {key!r} (scx_layered would ignore it silently)"
                )
        name = layer.get("name")
        limit = MAX_TEMPLATE_NAME_BYTES if "template" in layer else MAX_NAME_BYTES
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: name must be a non-empty string")
        else:
            where = f"layer[{index}] {name!r}"
            if len(name.encode()) > limit:
                problems.append(f"{where}: name is longer than {limit} bytes")
            if name in names:
                problems.append(f"{where}: duplicate name; stats are keyed by layer name")
            names.add(name)
        if "comment" in layer and not isinstance(layer["comment"], str):
            problems.append(f"{where}.comment: expected a string")
        if "template" in layer:
            template = layer["template"]
            if not (
                isinstance(template, dict)
                and len(template) == 1
                and next(iter(template)) in ("CgroupSuffix", "CgroupRegex")
            ):
                problems.append(f"{where}.template: only CgroupSuffix or CgroupRegex allowed")
        terminal = index == len(config) - 1
        regexes += _check_matches(where, layer.get("matches"), terminal, problems)
        _check_kind(where, layer.get("kind"), problems)
        if cpus is not None:
            _check_cpus(where, layer.get("kind"), cpus, problems)
    if regexes > MAX_CGROUP_REGEXES:
        problems.append(f"top level: {regexes} CgroupRegex rules, at most {MAX_CGROUP_REGEXES}")
    _check_open_preempt_mix(config, problems)
    if problems:
        raise LayerConfigError(problems)


def _open_layer_preempts(layer: Any) -> bool | None:
    """True or False for an Open layer with or without ``preempt``, None for other layers."""
    if not isinstance(layer, Mapping):
        return None
    kind = layer.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("Open"), dict):
        return None
    return kind["Open"].get("preempt") is True


def _check_open_preempt_mix(config: Sequence[Any], problems: list[str]) -> None:
    """Reject Open layers with ``preempt: true`` beside Open layers without it.

    scx_layered 1.1.2 dispatches from preempting and non-preempting Open layers in separate
    loops. With both kinds present, its BPF load into Linux 6.18 failed with E2BIG, because
    the verifier gave up after one million instructions. That config had 9 layers (the
    agent's profile and tier layers on 8 CPUs), and the VM tests load it. A 3-layer config
    with the same pair still loaded. The verifier's work grows with the layers around the
    pair, so the pair is rejected in any config.
    """
    preempting: list[str] = []
    other: list[str] = []
    for index, layer in enumerate(config):
        preempts = _open_layer_preempts(layer)
        if preempts is None:
            continue
        label = f"layer[{index}] {layer.get('name')!r}"
        (preempting if preempts else other).append(label)
    if preempting and other:
        problems.append(
            f"{', '.join(preempting)}: an Open layer with preempt: true beside Open layers "
            f"without preempt ({', '.join(other)}) makes scx_layered 1.1.2 fail to load its "
            "BPF programs (E2BIG); make the preempting layer Grouped, or drop its preempt"
        )


def _check_cpus(where: str, kind: Any, cpus: int, problems: list[str]) -> None:
    if not isinstance(kind, dict) or len(kind) != 1:
        return
    body = next(iter(kind.values()))
    if not isinstance(body, dict):
        return
    cpus_range = body.get("cpus_range")
    if (
        isinstance(cpus_range, list)
        and len(cpus_range) == 2
        and _is_int(cpus_range[0])
        and cpus_range[0] > cpus
    ):
        problems.append(
            f"{where}: cpus_range minimum {cpus_range[0]} exceeds the node's {cpus} CPUs"
        )
