"""Package layering: the shared core is the bottom, components never import each other."""

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("agent", "extender", "webhook", "rightsizer", "plane")
CORE = "temper"
# The CLI is the one module above the components.
CORE_MODULES_ALLOWED_ABOVE = ("temper/cli.py",)


def imported_top_level_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    # importlib.import_module("x.y") with a literal also counts as an import.
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def python_files(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_imports_no_other_component(component: str) -> None:
    for path in python_files(component):
        forbidden = imported_top_level_packages(path) & (set(COMPONENTS) - {component})
        assert not forbidden, f"{path.relative_to(REPO_ROOT)} imports {sorted(forbidden)}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_does_not_import_cli(component: str) -> None:
    for path in python_files(component):
        source = path.read_text()
        assert "temper.cli" not in source, f"{path.relative_to(REPO_ROOT)} imports temper.cli"


def test_core_imports_no_component() -> None:
    for path in python_files(CORE):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative in CORE_MODULES_ALLOWED_ABOVE:
            continue
        forbidden = imported_top_level_packages(path) & set(COMPONENTS)
        assert not forbidden, f"{relative} imports components {sorted(forbidden)}"


def test_checker_sees_imports(tmp_path: Path) -> None:
    # The checker itself must catch all three spellings, or the tests above prove nothing.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import agent.service\nfrom webhook import server\n"
        "import importlib\nimportlib.import_module('extender.cli')\n"
    )
    assert imported_top_level_packages(sample) >= {"agent", "webhook", "extender"}
