"""The project's virtualenv: BCC is importable, the rest of Debian's Python packages are not."""

import importlib.util
import sys
from pathlib import Path


def test_bcc_importable_from_venv() -> None:
    spec = importlib.util.find_spec("bcc")
    assert spec is not None, "run scripts/setup.sh to link Debian's python3-bpfcc"
    assert spec.origin is not None
    assert Path(spec.origin).resolve().is_relative_to("/usr/lib/python3/dist-packages/bcc")
    bcc = importlib.import_module("bcc")
    assert hasattr(bcc, "BPF")


def test_debian_dist_packages_not_on_path() -> None:
    assert "/usr/lib/python3/dist-packages" not in sys.path
    # python3-apt is part of every Debian system; it must stay invisible here.
    assert importlib.util.find_spec("apt_pkg") is None
