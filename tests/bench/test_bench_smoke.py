"""Every benchmark runs end to end with tiny sizes (--smoke: one run, no peer), so none can rot.

Figures are printed, never asserted: these tests only check that each script finishes, prints figures and
writes its JSON result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testsupport.firestore_emulator import TEST_TIMEOUT_S

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = [
    "dispatch_throughput",
    "enqueue_throughput",
    "rate_accuracy",
    "schedule_lateness",
    "backlog_scaling",
    "handler_overhead",
]
#: Scripts that start the Firestore emulator, whose JVM alone takes from 3 s to over 30 s to answer on a
#: loaded machine: they get :data:`EMULATOR_SCRIPT_TIMEOUT_S` (a wait for real servers, not a figure).
STARTS_THE_EMULATOR = {"handler_overhead"}
SCRIPT_TIMEOUT_S = 50
EMULATOR_SCRIPT_TIMEOUT_S = TEST_TIMEOUT_S - 30


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.timeout(TEST_TIMEOUT_S)) if name in STARTS_THE_EMULATOR else name
        for name in SCRIPTS
    ],
)
def test_benchmark_runs_with_tiny_sizes(name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=EMULATOR_SCRIPT_TIMEOUT_S if name in STARTS_THE_EMULATOR else SCRIPT_TIMEOUT_S,
        cwd=BENCH.parent,
        env={**os.environ, "BENCH_RESULTS": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["params"]["smoke"] is True
    assert result["figures"], done.stdout
    assert result["machine"]["cores"] >= 1
    for figure in result["figures"].values():
        assert f"{figure['label']}:" in done.stdout


def test_every_benchmark_is_smoke_tested_and_describes_itself() -> None:
    scripts = {p.stem for p in BENCH.glob("*.py")} - {"benchlib", "sink", "flask_app", "peer_client"}
    assert scripts - {"claim_cost"} == set(SCRIPTS)
    for path in BENCH.glob("*.py"):
        first = path.read_text().split('"""')[1].splitlines()[0]
        assert first and first.endswith("."), f"{path.name} needs a one-line description"
