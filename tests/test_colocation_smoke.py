"""The colocation benchmark's machinery, run for a few seconds with a tiny ladder.

This checks that a run produces well-formed results and cleans up after itself. It never
asserts on latency values: the machine is shared, and the benchmark itself measures them.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cgrouphelpers import CPU_ROOT, is_root

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="creates cgroups: needs root"),
    pytest.mark.skipif(not (CPU_ROOT / "cpu.idle").exists(), reason="needs cgroup v1 cpu.idle"),
    pytest.mark.skipif(
        shutil.which("memcached") is None, reason="needs memcached (scripts/setup.sh installs it)"
    ),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the tools"),
]

ARMS = ["stock", "stockmode"]
LADDER = [0, 1]


def run_benchmark(output_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "bench.colocation",
        "--arms", ",".join(ARMS),
        "--ladder", ",".join(str(step) for step in LADDER),
        "--repetitions", "1",
        "--warmup-seconds", "0.5",
        "--measure-seconds", "1",
        "--rate", "2000",
        "--output-dir", str(output_dir),
        "--plot", str(output_dir / "plot.png"),
        *extra,
    ]  # fmt: skip
    completed = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=180, check=False
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    return completed


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the benchmark briefly through its command line and return its results and paths."""
    output_dir = tmp_path_factory.mktemp("colocation")
    completed = run_benchmark(output_dir)
    record: dict[str, Any] = json.loads((output_dir / "results.json").read_text())
    return {"record": record, "plot": output_dir / "plot.png", "stdout": completed.stdout}


def test_smoke_every_arm_ran_every_step(run: dict[str, Any]) -> None:
    cells = {(cell["arm"], cell["fillers"]) for cell in run["record"]["cells"]}
    assert cells == {(arm, step) for arm in ARMS for step in LADDER}


def test_smoke_latencies_recorded(run: dict[str, Any]) -> None:
    for cell in run["record"]["cells"]:
        loadgen = cell["loadgen"]
        assert loadgen["recorded"] > 0, cell
        assert loadgen["recorded"] == loadgen["sent_measured"], cell
        assert loadgen["errors"] == 0, cell
        assert cell["latency_us"]["p99"] is not None, cell
        assert cell["lateness_us"]["p99"] is not None, cell


def test_smoke_fillers_did_work(run: dict[str, Any]) -> None:
    for cell in run["record"]["cells"]:
        if cell["fillers"] > 0:
            assert cell["filler_iterations_per_second"] > 0, cell


def test_smoke_filler_cpu_measured(run: dict[str, Any]) -> None:
    # One filler on a machine with at least two CPUs: a CPU-bound process gets most of a core
    # and never more than one.
    for cell in run["record"]["cells"]:
        if cell["fillers"] == 0:
            assert cell["filler_cores"] is None, cell
            assert cell["filler_preemptions_per_second"] is None, cell
        else:
            assert 0.2 < cell["filler_cores"] <= 1.05, cell
            assert cell["filler_preemptions_per_second"] >= 0, cell


def test_smoke_critical_run_delay_measured(run: dict[str, Any]) -> None:
    for cell in run["record"]["cells"]:
        for name in ("memcached_run_delay_ms_per_second", "loadgen_run_delay_ms_per_second"):
            # A delay rate cannot exceed what the threads could wait: under a second per
            # second and thread (memcached has fewer than 20 threads).
            assert 0 <= cell[name] < 20_000, (name, cell)


def test_smoke_stockmode_changed_cgroups(run: dict[str, Any]) -> None:
    cells = [c for c in run["record"]["cells"] if c["arm"] == "stockmode" and c["fillers"] == 1]
    assert cells[0]["arm_facts"]["pods_with_cpu_idle"] == 1
    # memcached and the load generator are critical pods: their CPU weight was raised.
    assert cells[0]["arm_facts"]["pods_with_raised_weight"] == 2


def test_smoke_rows_and_ratios(run: dict[str, Any]) -> None:
    rows = run["record"]["rows"]
    assert {(row["arm"], row["fillers"]) for row in rows} == {
        (arm, step) for arm in ARMS for step in LADDER
    }
    for row in rows:
        assert row["p99_growth"] is not None, row
        if row["fillers"] > 0:
            assert row["filler_throughput_ratio_to_stock"] is not None, row


def test_smoke_writes_table_and_plot(run: dict[str, Any]) -> None:
    assert run["plot"].read_bytes().startswith(b"\x89PNG")
    assert "| arm | fillers |" in run["stdout"]


def test_smoke_cleans_up_cgroups(run: dict[str, Any]) -> None:
    record = run["record"]
    paths = [record["testbed"]["memcached_cgroup"], record["testbed"]["loadgen_cgroup"]]
    for cell in record["cells"]:
        paths += cell["filler_cgroups"]
    assert len(paths) == 2 + sum(LADDER) * len(ARMS)
    for path in paths:
        assert not Path(path).exists(), path


def test_smoke_stops_memcached(run: dict[str, Any]) -> None:
    pid = run["record"]["testbed"]["memcached_pid"]
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline")
    assert not cmdline.exists() or b"memcached" not in cmdline.read_bytes()


def test_resume_runs_only_the_missing_cells(run: dict[str, Any], tmp_path: Path) -> None:
    # What a VM boot after a guest crash starts from: the cells finished before the crash.
    first_run = run["plot"].parent
    lines = (first_run / "cells.jsonl").read_text().splitlines()
    assert len(lines) == len(ARMS) * len(LADDER)
    (tmp_path / "cells.jsonl").write_text("\n".join(lines[:2]) + "\n")
    shutil.copytree(first_run / "cell-arrays", tmp_path / "cell-arrays")

    run_benchmark(tmp_path, "--resume")

    record = json.loads((tmp_path / "results.json").read_text())
    first_two = [json.loads(line) for line in lines[:2]]
    assert record["cells"][:2] == first_two  # kept as they were, not measured again
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == len(lines)
    cells = {(cell["arm"], cell["fillers"]) for cell in record["cells"]}
    assert cells == {(arm, step) for arm in ARMS for step in LADDER}
    # Pooled percentiles come from the kept latency arrays too.
    for row in record["rows"]:
        assert row["repetitions"] == 1
        assert row["p99_us"]


def test_smoke_verdicts_name_the_outcome(run: dict[str, Any]) -> None:
    verdicts = run["record"]["verdicts"]
    assert verdicts[0].startswith("stock (the reference): worst p99 growth"), verdicts
    (stockmode,) = [line for line in verdicts if line.startswith("stockmode:")]
    assert stockmode.count(": met") + stockmode.count(": missed") == 2, stockmode
