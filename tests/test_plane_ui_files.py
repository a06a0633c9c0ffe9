"""The web UI's static files, without a browser or a control plane."""

import re
from pathlib import Path

import pytest

from plane.ui import CONTENT_TYPES, UiAssetError, load_assets

STATIC_DIR = Path(__file__).resolve().parent.parent / "plane" / "ui" / "static"


def test_ui_files_name_no_other_host() -> None:
    files = sorted(STATIC_DIR.iterdir())
    assert "index.html" in [path.name for path in files]
    for path in files:
        text = path.read_text()
        # The SVG namespace is an identifier, not a request.
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert re.findall(r"(?:https?:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}", text) == [], path.name


def test_ui_files_are_all_served() -> None:
    assets = load_assets()
    on_disk = {path.name for path in STATIC_DIR.iterdir() if path.suffix in CONTENT_TYPES}
    assert set(assets) == on_disk
    assert assets["app.js"].content_type == "text/javascript"
    assert assets["app.js"].body == (STATIC_DIR / "app.js").read_bytes()


def test_ui_files_without_index_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("export {};\n")
    with pytest.raises(UiAssetError, match=rf"index\.html is missing from {tmp_path}"):
        load_assets(tmp_path)


def test_ui_files_missing_directory_is_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "static"
    with pytest.raises(UiAssetError, match=f"cannot read the web UI files in {missing}"):
        load_assets(missing)


def test_ui_files_of_other_kinds_are_not_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>\n")
    (tmp_path / "notes.txt").write_text("not served\n")
    assert set(load_assets(tmp_path)) == {"index.html"}
