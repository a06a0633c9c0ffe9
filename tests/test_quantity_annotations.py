"""CPU quantities and the annotation values of the contract."""

import pytest

from temper.annotations import (
    OriginalRequests,
    TierLoad,
    TierLoadEntry,
    is_safe_mode_requested,
)
from temper.errors import InvalidAnnotationError, InvalidQuantityError
from temper.quantity import cpu_millicores, format_cpu_millicores
from temper.tiers import Tier


@pytest.mark.parametrize(
    ("quantity", "millicores"),
    [
        ("250m", 250),
        ("1", 1000),
        ("1.5", 1500),
        ("0.1m", 1),
        ("2k", 2_000_000),
        ("1e-3", 1),
        (2, 2000),
        (0.25, 250),
        ("100000u", 100),
    ],
)
def test_cpu_millicores(quantity: str | int | float, millicores: int) -> None:
    assert cpu_millicores(quantity) == millicores


@pytest.mark.parametrize("quantity", ["", "abc", "1.2.3", "-1", "m", "nan", "inf"])
def test_cpu_millicores_rejects(quantity: str) -> None:
    with pytest.raises(InvalidQuantityError, match="invalid quantity"):
        cpu_millicores(quantity)


@pytest.mark.parametrize(("millicores", "text"), [(1500, "1500m"), (2000, "2"), (10, "10m")])
def test_format_cpu_millicores(millicores: int, text: str) -> None:
    assert format_cpu_millicores(millicores) == text


def test_tier_load_round_trip() -> None:
    load = TierLoad(
        timestamp_seconds=1_700_000_000.5,
        node_cpu_millicores=8000,
        tiers={Tier.CRITICAL: TierLoadEntry(2000, 500, 80, 4000, 2)},
    )
    decoded = TierLoad.decode(load.encode())
    assert decoded == load


def test_tier_load_is_compact_with_version() -> None:
    encoded = TierLoad(1.0, 1000, {}).encode()
    assert " " not in encoded
    assert '"v":1' in encoded


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"v": 2, "ts": 1, "cpu_m": 1, "tiers": {}}', "schema version"),
        ('{"v": 1, "ts": "x", "cpu_m": 1, "tiers": {}}', "'ts'"),
        ('{"v": 1, "ts": 1, "cpu_m": 1, "tiers": []}', "'tiers'"),
        ('{"v": 1, "ts": 1, "cpu_m": 1, "tiers": {"gold": {}}}', "unknown tier 'gold'"),
        ('{"v": 1, "ts": 1, "cpu_m": -5, "tiers": {}}', "'cpu_m'"),
        (
            '{"v":1,"ts":1,"cpu_m":1,"tiers":{"low":{"req_m":1.5,"used_m":0,'
            '"rqd_p99_us":0,"cap_m":0,"pods":0}}}',
            "'req_m'",
        ),
    ],
)
def test_tier_load_rejects_garbage(raw: str, message: str) -> None:
    with pytest.raises(InvalidAnnotationError, match=message):
        TierLoad.decode(raw)


def test_original_requests_round_trip() -> None:
    value = OriginalRequests({"app": "500m", "side": None}, {"init": "1"})
    assert OriginalRequests.decode(value.encode()) == value


def test_original_requests_rejects_numbers() -> None:
    with pytest.raises(InvalidAnnotationError, match="'cpu'"):
        OriginalRequests.decode('{"v": 1, "cpu": {"app": 5}}')


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), (" true ", True), ("false", False), ("yes", False)],
)
def test_safe_mode_requested(value: str, expected: bool) -> None:
    annotations = {"temper.codes/safe-mode-requested": value}
    assert is_safe_mode_requested(annotations) is expected


def test_safe_mode_absent() -> None:
    assert not is_safe_mode_requested(None)
    assert not is_safe_mode_requested({})
