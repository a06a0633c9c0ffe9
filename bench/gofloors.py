"""Build the Go programs that two benchmarks measure as their floor: ``noopextender`` (the
extender protocol alone) and ``noopwebhook`` (a mutating webhook call alone)."""

import os
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def build(name: str, directory: Path) -> Path:
    """Build ``bench/<name>`` with the Go toolchain into ``directory`` and return its path."""
    binary = directory / name
    subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=BENCH / name,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        check=True,
    )
    return binary
