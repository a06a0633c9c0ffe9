"""``temper profile`` check, list and the train errors that need no running process."""

from pathlib import Path

import pytest
import yaml

from temper.cli import main

VALID = {
    "name": "etl",
    "description": "ETL worker",
    "match": {"images": ["etl"]},
    "groups": [{"name": "io", "threads": ["etl_io"], "treatment": "latency"}],
}


def test_check_accepts_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "etl.yaml"
    path.write_text(yaml.safe_dump(VALID))
    assert main(["profile", "check", str(path)]) == 0
    assert f"{path}: ok, profile etl with 1 group(s)" in capsys.readouterr().out


def test_check_reports_file_field_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.yaml"
    bad = {**VALID, "groups": [{"name": "io", "threads": ["io_*_thread"], "treatment": "yield"}]}
    path.write_text(yaml.safe_dump(bad))
    assert main(["profile", "check", str(path)]) == 2
    error = capsys.readouterr().err
    assert f"{path}: groups[0].threads[0]: 'io_*_thread' has a '*' inside" in error
    assert "use 'io_'" in error


def test_list_shows_custom_then_builtins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "etl.yaml").write_text(yaml.safe_dump(VALID))
    assert main(["profile", "list", "--profile-dir", str(tmp_path)]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["etl", "jvm-hotspot", "mysql-innodb", "pytorch-dataloader"]


def test_train_rejects_missing_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["profile", "train", "--pid", "999999999", "--output", str(tmp_path / "p.yaml")])
    assert code == 2
    assert "process 999999999: no process found" in capsys.readouterr().err


def test_train_keeps_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "p.yaml"
    output.write_text("keep me")
    assert main(["profile", "train", "--pid", "1", "--output", str(output)]) == 2
    assert "pass --force to overwrite it" in capsys.readouterr().err
    assert output.read_text() == "keep me"


def test_train_rejects_missing_cgroup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = tmp_path / "absent"
    code = main(["profile", "train", "--cgroup", str(absent), "--output", str(tmp_path / "p")])
    assert code == 2
    assert f"{absent}: cgroup directory not found" in capsys.readouterr().err
