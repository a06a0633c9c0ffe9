"""Parse Kubernetes resource quantities into CPU millicores and bytes."""

from decimal import Decimal, InvalidOperation
from math import ceil

from temper.errors import InvalidQuantityError

_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_BINARY_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity such as ``250m``, ``1.5``, ``2Gi`` or ``1e3`` into a Decimal."""
    if isinstance(value, bool):
        raise InvalidQuantityError(f"invalid quantity {value!r}: expected a string or number")
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = value.strip()
    if not text:
        raise InvalidQuantityError("invalid quantity '': expected a number such as 500m or 2")
    suffix = text[-2:] if text[-2:] in _BINARY_SUFFIXES else ""
    multiplier = _BINARY_SUFFIXES.get(suffix)
    if multiplier is None:
        suffix = text[-1] if text[-1] in _DECIMAL_SUFFIXES and not text[-1].isdigit() else ""
        multiplier = _DECIMAL_SUFFIXES[suffix]
    number = text[: len(text) - len(suffix)] if suffix else text
    try:
        parsed = Decimal(number)
    except InvalidOperation as error:
        raise InvalidQuantityError(
            f"invalid quantity {value!r}: expected a number with an optional suffix "
            "(m, k, M, G, Ki, Mi, Gi, ...)"
        ) from error
    if not parsed.is_finite() or parsed < 0:
        raise InvalidQuantityError(f"invalid quantity {value!r}: must be a finite number >= 0")
    return parsed * multiplier


def cpu_millicores(value: str | int | float) -> int:
    """Convert a CPU quantity to millicores, rounding up as the kubelet does (``0.1m`` -> 1)."""
    return ceil(parse_quantity(value) * 1000)


def format_cpu_millicores(millicores: int) -> str:
    """Format millicores as a CPU quantity: ``1500`` -> ``1500m``, ``2000`` -> ``2``."""
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"
