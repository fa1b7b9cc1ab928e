"""The README's first command: ``python -m sample_worker.demo`` on a fresh directory, as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def demo(cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sample_worker.demo"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )


def children(out: str) -> list[int]:
    match = re.search(r"worker on \S+ \(pid (\d+)\), runner on \S+ \(pid (\d+)\)", out)
    assert match, out
    return [int(match.group(1)), int(match.group(2))]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(120)
def test_demo_shows_every_scenario_and_stops_both_processes(tmp_path: Path) -> None:
    process = demo(tmp_path)
    out, _ = process.communicate(timeout=100)
    assert process.returncode == 0, out
    for line in [
        "console: http://127.0.0.1:",
        "-> 201 signed up",
        "again -> 200 already signed up",
        "HTTP 503",
        "next retry in 1s",
        "next retry in 2s",
        "✓ welcome email sent once",
        "on time (due",
        "thumbnail 128x96 on attempt 3",
        "rejected on attempt 1 (thumbnails need image/png, got application/pdf)",
        "sync-jobs: create  weekly-digest: 0 9 * * 1 (Europe/London), POST http://127.0.0.1:",
        "job weekly-digest: '0 9 * * 1' Europe/London, next fire ",
        "weekly digest weekly-digest@",
        ": 3 email task(s) enqueued, 0 already enqueued",
        "✓ weekly digest: 3 emails, one per user, from one fire",
    ]:
        assert line in out, f"{line!r} missing from:\n{out}"
    assert "EARLY" not in out
    assert (tmp_path / ".runner" / "runner.sqlite3").is_file()  # the runner's embedded SQLite default
    # The welcome email, the reminder, and one digest per user (the demo's user and two others).
    assert len(list((tmp_path / ".demo" / "outbox").glob("*.eml"))) == 2 + 3
    assert all(gone(pid) for pid in children(out))


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_worker_and_the_runner(tmp_path: Path) -> None:
    process = demo(tmp_path)
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "POST /signup" in line:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    out = "".join(lines) + rest
    assert process.returncode == 130, out
    assert "interrupted" in out and "runner stopped" in out
    assert all(gone(pid) for pid in children(out))
