"""The README's first command: the demo runs end to end on the runner's SQLite default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_demo_delivers_every_scenario(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sample_worker.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=80,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "409 ALREADY_EXISTS (dedup)" in out
    assert "/tasks/thumbnail" in out and "retry=2 -> 200" in out
    assert "next retry in 1s" in out and "next retry in 2s" in out
    assert "/tasks/reminder" in out
    assert "all tasks delivered" in out
    assert (tmp_path / ".runner" / "runner.sqlite3").is_file()  # the embedded SQLite default
