"""The ``temper`` command: help for every subcommand, and settings errors."""

import subprocess
import sys

import pytest

from temper.cli import SUBCOMMANDS, build_parser, main


def run_temper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "temper.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_top_level_help_lists_subcommands() -> None:
    result = run_temper("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("subcommand", sorted(SUBCOMMANDS))
def test_subcommand_help_describes_options(subcommand: str) -> None:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    sub = subparsers.choices[subcommand]  # type: ignore[index]
    options = [action for action in sub._actions if action.option_strings]
    assert sub.description
    for action in options:
        assert action.help, f"{subcommand} {action.option_strings} has no help text"
        assert "PydanticUndefined" not in action.help, f"{subcommand} {action.option_strings}"
    # Every option whose value has a unit carries it in its name.
    for action in options:
        flag = action.option_strings[0]
        if any(word in flag for word in ("interval", "timeout", "debounce")):
            assert flag.endswith("-seconds"), f"{subcommand} {flag} lacks a unit suffix"


def test_invalid_setting_names_field_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["agent", "--node-name", "n1", "--publish-interval-seconds", "0.01"])
    assert code == 2
    error = capsys.readouterr().err
    assert "publish_interval_seconds" in error
    assert "0.01" in error
    assert "TEMPER_AGENT_PUBLISH_INTERVAL_SECONDS" in error


def test_required_setting_marked_in_help() -> None:
    result = run_temper("agent", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "spec.nodeName from the downward API) (required)" in text


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["agent"], "TEMPER_AGENT_"),
        (["extender"], "TEMPER_EXTENDER_"),
        (["webhook"], "TEMPER_WEBHOOK_"),
        (["webhook", "revert"], "TEMPER_WEBHOOK_REVERT_"),
        (["rightsize", "apply"], "TEMPER_RIGHTSIZE_"),
        (["plane", "serve"], "TEMPER_PLANE_"),
    ],
)
def test_help_names_environment_variables(command: list[str], prefix: str) -> None:
    result = run_temper(*command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert f"set with an environment variable {prefix}<OPTION>" in text
    assert f"for example {prefix}" in text


def test_environment_variables_are_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEMPER_AGENT_NODE_NAME", "n1")
        patch.setenv("TEMPER_AGENT_PUBLISH_INTERVAL_SECONDS", "0.01")
        code = main(["agent"])
    assert code == 2
    error = capsys.readouterr().err
    assert "publish_interval_seconds" in error
    assert "0.01" in error
