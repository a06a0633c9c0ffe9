"""``temper rightsize``: actions, help text, errors, and collect run as a user would."""

import argparse
import asyncio
import sys
from pathlib import Path

import pytest

from rightsizer.cli import ACTIONS
from rightsizer.history import ContainerKey
from rightsizer.store import HistoryStore
from temper.cli import build_parser, main
from tests.fakeagent import FakeAgent
from tests.observesnapshots import FakePod, FakeThread


def action_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    rightsize = commands.choices["rightsize"]  # type: ignore[index]
    actions = next(a for a in rightsize._actions if a.dest == "action")
    return dict(actions.choices)  # type: ignore[arg-type]


def test_rightsize_has_every_action() -> None:
    assert set(action_parsers()) == {
        "collect",
        "recommend",
        "report",
        "accept",
        "dismiss",
        "apply",
    }


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_action_options_have_help(action: str) -> None:
    options = [a for a in action_parsers()[action]._actions if a.option_strings]
    for option in options:
        assert option.help, f"{action} {option.option_strings} has no help text"


@pytest.mark.parametrize(
    ("flag", "unit"),
    [
        ("--collect-interval-seconds", "Seconds"),
        ("--window-hours", "Hours"),
        ("--retention-days", "Days"),
        ("--min-cpu-millicores", "millicores"),
        ("--reaction-minutes", "Minutes"),
        ("--apply-interval-minutes", "Minutes"),
        ("--level-minutes", "Minutes"),
        ("--apply-hysteresis-fraction", "fraction"),
        ("--apply-max-resized-pods", "pods"),
    ],
)
def test_help_states_units(flag: str, unit: str) -> None:
    parser = action_parsers()["recommend"]
    [option] = [a for a in parser._actions if flag in a.option_strings]
    assert unit in str(option.help)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_action_help_renders(action: str) -> None:
    help_text = action_parsers()[action].format_help()
    assert "PydanticUndefined" not in help_text


def test_collect_without_agents_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["rightsize", "collect", "--ticks", "1", "--history-path", str(tmp_path / "h")])
    assert code == 2
    assert "--observe-urls" in capsys.readouterr().err


def test_report_without_history_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    code = main(["rightsize", "report", "--history-path", str(missing)])
    assert code == 2
    assert f"history file {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_report_on_empty_history(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    # The kubeconfig does not exist: an empty history needs no API server.
    args = ["--history-path", str(path), "--kubeconfig", str(tmp_path / "no-kubeconfig")]
    assert main(["rightsize", "report", *args]) == 0
    assert capsys.readouterr().out.startswith("no recommendations")


def test_apply_without_history_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    code = main(["rightsize", "apply", "--ticks", "1", "--history-path", str(missing)])
    assert code == 2
    assert f"history file {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_apply_rejects_invalid_hysteresis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rightsize", "apply", "--apply-hysteresis-fraction", "2"]) == 2
    error = capsys.readouterr().err
    assert "apply_hysteresis_fraction" in error
    assert "TEMPER_RIGHTSIZE_APPLY_HYSTERESIS_FRACTION" in error


def test_invalid_setting_names_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rightsize", "report", "--target-seconds-above-ratio", "0.7"]) == 2
    error = capsys.readouterr().err
    assert "target_seconds_above_ratio" in error
    assert "TEMPER_RIGHTSIZE_TARGET_SECONDS_ABOVE_RATIO" in error


def test_accept_rejects_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rightsize", "accept", "service/web"]) == 2
    assert "expected KIND/NAME" in capsys.readouterr().err


async def test_collect_command_writes_history(tmp_path: Path) -> None:
    pod = FakePod("shop", "web-1", "uid-1", [FakeThread(1, "evloop", 0.9)])
    path = tmp_path / "h.sqlite"
    async with FakeAgent([pod]) as agent:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temper.cli",
            "rightsize",
            "collect",
            "--observe-urls",
            agent.url,
            "--collect-interval-seconds",
            "1",
            "--ticks",
            "3",
            "--history-path",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert f"collected 3 intervals, 2 thread rows written to {path}" in stdout.decode()
    with HistoryStore(path) as store:
        history = store.load(ContainerKey("shop", "web-1", "uid-1", "app"), 0.0, 1e10)
    assert history.intervals == 2
