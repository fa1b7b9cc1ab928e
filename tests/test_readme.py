"""The README's handler example runs as written and rejects an unauthenticated call."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_handler_example_runs_and_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [block] = [b for b in python_blocks() if "@task_handler" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, str(README), "exec"), namespace)
    app = namespace["app"]
    response = app.test_client().post("/tasks/send-welcome-email", json={"user_id": 42})
    assert response.status_code == 401
    assert (tmp_path / "dedup.sqlite3").exists()
