"""The runner's disk goes wrong: full (a file size limit on the process), truncated after a crash.

A full disk is simulated with ``RLIMIT_FSIZE`` (works unprivileged and as root, in CI too): the runner's
files cannot grow past the limit, which is what a full file system does to SQLite.
"""

from __future__ import annotations

import base64
import contextlib
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from reliability.api import RunnerApi
from reliability.figures import Figures, Row
from reliability.polling import eventually
from reliability.sink import Gate, Sink
from testsupport.runner_process import RunnerProcess

from local_runner.store import DB_FILENAME

BODY = b"x" * 48 * 1024
IN_FLIGHT = 10
STORE_ERRORS = {(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")}


@pytest.fixture
def sink() -> Iterator[Sink]:
    target = Sink().start()
    yield target
    target.close()


def limit_file_size(pid: int, limit: int) -> None:
    """Set the process's file size limit (``RLIM_INFINITY``: none)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


def create(api: RunnerApi, queue: str, url: str) -> requests.Response:
    body = base64.b64encode(b"x" * 1024).decode()
    return api.call("POST", f"v2/{queue}/tasks", {"task": {"httpRequest": {"url": url, "body": body}}})


def test_full_disk_refuses_clearly_keeps_attempts_in_flight_and_recovers(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], figures: Figures
) -> None:
    gate = Gate()
    sink = Sink(gate.respond).start()
    try:
        runner = runner_process(tmp_path)
        api = RunnerApi(runner.url)
        queue = api.create_queue("disk", rateLimits={"maxDispatchesPerSecond": 100})
        accepted = [create(api, queue, sink.url + "/w").json()["name"] for _ in range(IN_FLIGHT)]
        eventually(lambda: sink.in_flight == IN_FLIGHT)

        # The disk fills up while attempts are in flight: no file of the runner may grow any more.
        database = [tmp_path / DB_FILENAME, tmp_path / f"{DB_FILENAME}-wal"]
        limit_file_size(runner.pid, max(path.stat().st_size for path in database))
        refusals = [create(api, queue, sink.url + "/w") for _ in range(5)]
        for response in refusals:
            error = response.json()["error"]
            assert (error["code"], error["status"]) in STORE_ERRORS, response.text
            assert "cannot use its database" in error["message"] and DB_FILENAME in error["message"]
        gate.open.set()  # the handler answers 200; the runner cannot record it yet
        eventually(lambda: sum("recording attempt 1 of" in line for line in runner.log) == IN_FLIGHT)
        stuck = api.call("POST", "runner/v1/waitIdle", {"timeout": "0.2s"})
        assert stuck.status_code == 504  # still in flight: neither dropped nor re-sent

        limit_file_size(runner.pid, resource.RLIM_INFINITY)  # space is freed: no restart needed
        accepted.append(create(api, queue, sink.url + "/w").json()["name"])
        api.wait_idle(timeout=60)
        assert api.all_tasks(queue) == []
        delivered = sink.per_task()
        assert sorted(delivered) == sorted(name.rpartition("/")[2] for name in accepted)
        assert set(delivered.values()) == {1}  # the late-recorded 200s were not dispatched again
        for name in accepted:
            assert [a["httpStatus"] for a in api.attempts(name)] == [200]
        log = "\n".join(runner.log)
        assert "Traceback" not in log and "Internal error" not in log
    finally:
        sink.close()
    figures.record(
        Row(
            "disk full while serving (RLIMIT_FSIZE on the runner process)",
            f"{len(accepted)} tasks accepted, {IN_FLIGHT} in flight when the disk filled",
            "files may not grow: CreateTask refused, outcomes of attempts in flight not storable; "
            "then space freed without a restart",
            lost=0,
            duplicates=max(delivered.values()) - 1,
            server_errors=sum(r.status_code == 500 for r in refusals),
        )
    )


def serve_with_file_limit(data_dir: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """``runner serve`` started with a file size limit from its first instruction."""
    launcher = (
        "import os, resource, sys\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, hard))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'local_runner', *sys.argv[1:]])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, "serve", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_full_disk_at_start_up_is_a_clear_error(tmp_path: Path) -> None:
    result = serve_with_file_limit(tmp_path / "data", 0)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Cannot open the task store" in result.stderr and DB_FILENAME in result.stderr


def test_truncated_database_after_a_crash_is_never_served_as_empty(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], sink: Sink, figures: Figures
) -> None:
    runner = runner_process(tmp_path, "--queues", str(_queue_file(tmp_path)))
    api = RunnerApi(runner.url)
    queue = api.ok("GET", "v2/projects/local-project/locations/us-central1/queues")["queues"][0]["name"]
    for _ in range(60):
        api.create_task(queue, sink.url + "/w", body=BODY)
    runner.interrupt()  # a clean stop checkpoints the WAL: everything is in the main file
    db = tmp_path / DB_FILENAME
    size = db.stat().st_size
    with db.open("r+b") as handle:
        handle.truncate(size // 2)

    process = RunnerProcess(tmp_path)
    try:
        process.start()
    except AssertionError:  # refused at start-up: the message names the file, without a traceback
        log = "\n".join(process.log)
        assert DB_FILENAME in log and "Traceback" not in log
        outcome = "refused at start-up"
    else:
        api = RunnerApi(process.url)
        answer = api.call("GET", f"v2/{queue}/tasks", pageSize="1000")
        error = answer.json().get("error", {})
        assert (answer.status_code, error.get("status")) in STORE_ERRORS, answer.text
        outcome = f"served, reads answer {answer.status_code} {error['status']}"
    finally:
        process.close()
    figures.record(
        Row(
            "database truncated to half its size between runs",
            "60 tasks of 48 KiB",
            f"truncated runner.sqlite3; restart {outcome}",
            lost=None,
            server_errors=0,
        )
    )


def _queue_file(tmp_path: Path) -> Path:
    path = tmp_path / "queues.yaml"
    path.write_text("name: truncated\nstate: PAUSED\n", encoding="utf-8")
    return path


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, where the file system really runs out of space (needs mount rights; else skip)."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE variant covers a full disk")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def test_full_file_system_answers_resource_exhausted_and_recovers(
    small_tmpfs: Path, runner_process: Callable[..., RunnerProcess], sink: Sink
) -> None:
    runner = runner_process(small_tmpfs / "data")
    api = RunnerApi(runner.url)
    queue = api.create_queue("tmpfs")
    api.ok("POST", f"v2/{queue}:pause")
    accepted = [api.create_task(queue, sink.url + "/w", body=b"x" * 1024) for _ in range(20)]
    ballast = small_tmpfs / "ballast"
    with ballast.open("wb") as out, contextlib.suppress(OSError):  # another program fills the disk
        while True:
            out.write(b"\0" * 64 * 1024)
            out.flush()

    refused = [create(api, queue, sink.url + "/w") for _ in range(3)]
    refused.append(api.call("POST", f"v2/{queue}:resume"))
    for response in refused:
        error = response.json()["error"]
        assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED"), response.text
        assert "database or disk is full" in error["message"] and DB_FILENAME in error["message"]
    assert api.ok("GET", f"v2/{queue}")["state"] == "PAUSED"  # the refused resume changed nothing

    ballast.unlink()  # space is freed: no restart needed
    api.ok("POST", f"v2/{queue}:resume")
    accepted.append(api.create_task(queue, sink.url + "/w", body=b"x" * 1024))
    api.wait_idle(timeout=60)
    assert api.all_tasks(queue) == []
    assert sorted(sink.per_task()) == sorted(name.rpartition("/")[2] for name in accepted)
    assert "Traceback" not in "\n".join(runner.log)
