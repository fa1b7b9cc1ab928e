from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_runner.config import ConfigError, load_queue_file
from local_runner.model import QueueState, RateLimits, RetryConfig
from local_runner.store import DB_FILENAME, SQLiteTaskStore

PARENT = "projects/local-project/locations/us-central1"

# What `gcloud tasks queues describe` prints, pasted as is.
GCLOUD_DESCRIBE = """\
name: projects/local-project/locations/us-central1/queues/emails
rateLimits:
  maxBurstSize: 10
  maxConcurrentDispatches: 20
  maxDispatchesPerSecond: 5.0
retryConfig:
  maxAttempts: 5
  maxBackoff: 300s
  maxDoublings: 3
  minBackoff: 10s
  maxRetryDuration: 3600s
state: RUNNING
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "queues.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_gcloud_describe_output_is_a_valid_queue_file(tmp_path: Path) -> None:
    [spec] = load_queue_file(write(tmp_path, GCLOUD_DESCRIBE), PARENT)
    assert spec.queue.name == f"{PARENT}/queues/emails"
    assert spec.queue.rate_limits == RateLimits(5.0, 20)
    assert spec.queue.retry_config == RetryConfig(5, 3600.0, 10.0, 300.0, 3)
    assert spec.state is QueueState.RUNNING


def test_queues_list_short_names_snake_case_and_multiple_documents(tmp_path: Path) -> None:
    text = """\
    queues:
      - name: images
        rate_limits: {max_dispatches_per_second: 1}
      - name: reminders
        state: PAUSED
    ---
    name: projects/other/locations/europe-west1/queues/audit
    """
    specs = load_queue_file(write(tmp_path, text), PARENT)
    assert [s.queue.name for s in specs] == [
        f"{PARENT}/queues/images",
        f"{PARENT}/queues/reminders",
        "projects/other/locations/europe-west1/queues/audit",
    ]
    assert specs[0].queue.rate_limits.max_dispatches_per_second == 1
    assert specs[1].state is QueueState.PAUSED
    assert specs[2].queue.retry_config == RetryConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: q\nrateLimits: {maxDispatchesPerSecond: 900}\n",
            "maxDispatchesPerSecond must be less than or equal to 500",
        ),
        ("name: q\nretryConfig: {minBackoff: fast}\n", "retry_config.min_backoff"),
        ("name: q\nrateLimit: {}\n", 'Unknown name "rateLimit"'),
        ("rateLimits: {}\n", "queue #1 needs a 'name'"),
        ("name: bad_name\n", "Queue name must be formatted"),
        ("queues: {name: q}\n", "'queues' must be a list"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_queue_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_queue_file(path, PARENT)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_serve_applies_the_queue_file(tmp_path: Path, runner_process: Callable[..., Any]) -> None:
    queues = write(tmp_path, GCLOUD_DESCRIBE + "---\nname: paused\nstate: PAUSED\n")
    data = tmp_path / "data"
    runner = runner_process(data, "--queues", str(queues))
    assert runner.interrupt() == 0
    store = SQLiteTaskStore(data / DB_FILENAME)
    try:
        emails = store.get_queue(f"{PARENT}/queues/emails")
        paused = store.get_queue(f"{PARENT}/queues/paused")
    finally:
        store.close()
    assert emails is not None and emails.rate_limits == RateLimits(5.0, 20)
    assert paused is not None and paused.state is QueueState.PAUSED


def test_serve_reports_a_bad_queue_file_without_a_traceback(tmp_path: Path) -> None:
    queues = write(tmp_path, "name: q\nrateLimits: {maxConcurrentDispatches: 9000}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "local_runner",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
            "--queues",
            str(queues),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "maxConcurrentDispatches must be less than or equal to 5000" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reports_a_corrupt_database_without_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "local_runner", "serve", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert DB_FILENAME in result.stderr
    assert "Traceback" not in result.stderr
