"""SIGKILL ``runner serve`` at random moments while it dispatches to a real tasktoolkit handler.

The target is a Flask app with ``@task_handler`` (runner-issued OIDC tokens, SQLite dedup store) on a real
port. After the last restart the runner must go idle with every task acknowledged; the handler's body must
have run exactly as often as the script says (no duplicate execution), and every extra delivery must be
explained by a kill that came while it was in flight.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from reliability.api import RunnerApi
from reliability.figures import Figures, Row
from testsupport.runner_process import RunnerProcess

from tasktoolkit import TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import SQLiteDedupStore
from tests.tasktoolkit.conftest import free_port

AUDIENCE = "https://worker.reliability.test/work"
EMAIL = "tasks@reliability.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Seen:
    """One delivery as the worker's WSGI layer saw it."""

    task: str
    retry_count: int
    execution_count: int
    previous_response: int | None
    received: float  # time.monotonic()
    wall: float  # time.time()
    status: int


@dataclass(frozen=True)
class Plan:
    """What one task does: how long its body takes, how often it fails first, when it is due."""

    task_id: str
    delay_s: float
    failures: tuple[int, ...] = ()
    schedule_time: float | None = None


class CrashWorker:
    """The handler app: records every delivery (WSGI) and every run of the body."""

    def __init__(self, store_path: Path) -> None:
        self.deliveries: list[Seen] = []
        self.runs: dict[str, list[int]] = defaultdict(list)  # task id -> statuses the body answered
        self._lock = threading.Lock()
        self.app = Flask("crash-worker")
        self.app.config.update(TASKTOOLKIT_AUDIENCE=AUDIENCE, TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=[EMAIL])
        self.toolkit = TaskToolkit(self.app, store=SQLiteDedupStore(store_path))
        self.app.add_url_rule("/work", view_func=task_handler(self.work), methods=["POST"])
        inner = self.app.wsgi_app
        self.app.wsgi_app = lambda environ, start: self._record(inner, environ, start)  # type: ignore[method-assign]

    def work(self, payload: dict[str, Any], task: TaskContext) -> Any:
        threading.Event().wait(payload["delay_s"])
        with self._lock:
            runs = self.runs[task.task_name]
            failures = payload["failures"]
            status = failures[len(runs)] if len(runs) < len(failures) else 200
            runs.append(status)
        return {"run": len(runs)}, status

    def _record(self, inner: Any, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        received, wall = time.monotonic(), time.time()
        statuses: list[int] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(int(status[:3]))
            return start(status, headers, exc_info)

        result = inner(environ, start_response)
        previous = environ.get("HTTP_X_CLOUDTASKS_TASKPREVIOUSRESPONSE")
        seen = Seen(
            task=environ.get("HTTP_X_CLOUDTASKS_TASKNAME", ""),
            retry_count=int(environ.get("HTTP_X_CLOUDTASKS_TASKRETRYCOUNT", "-1")),
            execution_count=int(environ.get("HTTP_X_CLOUDTASKS_TASKEXECUTIONCOUNT", "-1")),
            previous_response=int(previous) if previous else None,
            received=received,
            wall=wall,
            status=statuses[0],
        )
        with self._lock:
            self.deliveries.append(seen)
        return result  # type: ignore[no-any-return]


def make_plans(rng: random.Random, prefix: str, count: int, now: float) -> list[Plan]:
    plans = []
    for index in range(count):
        kind = rng.random()
        task_id = f"{prefix}-{index}"
        if kind < 0.5:
            plans.append(Plan(task_id, rng.uniform(0, 0.05)))
        elif kind < 0.7:
            plans.append(Plan(task_id, rng.uniform(0.2, 0.4)))
        elif kind < 0.85:
            failures = tuple(rng.choice((500, 404, 503)) for _ in range(rng.randint(1, 2)))
            plans.append(Plan(task_id, rng.uniform(0, 0.1), failures))
        else:
            plans.append(Plan(task_id, rng.uniform(0, 0.05), schedule_time=now + rng.uniform(0.3, 1.5)))
    return plans


def explained(kills: list[float], after: float, before: float) -> bool:
    """Whether a kill came between two instants (time.monotonic())."""
    return any(after < kill < before for kill in kills)


def check_deliveries(plan: Plan, seen: list[Seen], kills: list[float]) -> int:
    """Assert the task's delivery sequence; returns how many deliveries were extra (crash-caused)."""
    assert seen, f"{plan.task_id} was never delivered"
    first = seen[0]
    if not explained(kills, 0.0, first.received):
        assert (first.retry_count, first.execution_count) == (0, 0), (plan, first)
    if plan.schedule_time is not None:
        assert first.wall >= plan.schedule_time, (plan, first)
    for earlier, later in itertools.pairwise(seen):
        assert later.retry_count > earlier.retry_count, (plan.task_id, seen)
        executed = earlier.execution_count + (earlier.status < 500)
        if explained(kills, earlier.received, later.received):
            assert earlier.execution_count <= later.execution_count <= executed, (plan.task_id, seen)
        else:
            assert later.retry_count == earlier.retry_count + 1, (plan.task_id, seen)
            assert later.execution_count == executed, (plan.task_id, seen)
            assert later.previous_response == earlier.status, (plan.task_id, seen)
    assert seen[-1].status == 200, (plan.task_id, seen)
    return len(seen) - (len(plan.failures) + 1)


def create_tasks(api: RunnerApi, queue: str, url: str, plans: list[Plan]) -> None:
    for plan in plans:
        payload = f'{{"delay_s": {plan.delay_s}, "failures": {list(plan.failures)}}}'.encode()
        api.create_task(
            queue,
            url,
            task_id=plan.task_id,
            body=payload,
            schedule_time=plan.schedule_time,
            headers={"Content-Type": "application/json"},
            oidcToken={"serviceAccountEmail": EMAIL, "audience": AUDIENCE},
        )


def run_crash_scenario(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[Flask], Any],
    figures: Figures,
    *,
    tasks: int,
    kills: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    port = free_port()
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", f"127.0.0.1:{port}")
    worker = CrashWorker(tmp_path / "dedup.sqlite3")
    target = serve(worker.app).url
    data_dir = tmp_path / "runner"
    kill_times: list[float] = []
    plans: list[Plan] = []
    queue = ""
    per_round = tasks // kills
    for round_ in range(kills + 1):
        runner = RunnerProcess(data_dir, "--port", str(port)).start()
        try:
            api = RunnerApi(runner.url)
            if round_ == 0:
                queue = api.create_queue(
                    "crash",
                    rateLimits={"maxDispatchesPerSecond": 200, "maxConcurrentDispatches": 20},
                    retryConfig={"minBackoff": "0.1s", "maxBackoff": "0.3s", "maxDoublings": 1},
                )
            if round_ == kills:
                api.wait_idle(timeout=120)
                assert api.all_tasks(queue) == []  # every task acknowledged: nothing queued or exhausted
                break
            batch = make_plans(rng, f"r{round_}", per_round, time.time())
            create_tasks(api, queue, target + "/work", batch)
            plans += batch
            threading.Event().wait(rng.uniform(0.1, 0.7))
            runner.kill()
            kill_times.append(time.monotonic())
        finally:
            runner.close()
    TaskToolkit.state(worker.app).close()

    by_task: dict[str, list[Seen]] = defaultdict(list)
    for seen in sorted(worker.deliveries, key=lambda s: s.received):
        by_task[seen.task].append(seen)
    assert set(by_task) == {plan.task_id for plan in plans}  # none lost, none invented
    extra = sum(check_deliveries(plan, by_task[plan.task_id], kill_times) for plan in plans)
    duplicates = 0
    for plan in plans:
        runs = worker.runs[plan.task_id]
        assert runs == [*plan.failures, 200], (plan, runs)  # the body ran exactly as scripted
        duplicates += runs.count(200) - 1
    scripted_5xx = sum(status >= 500 for runs in worker.runs.values() for status in runs)
    ours_5xx = sum(seen.status >= 500 for seen in worker.deliveries) - scripted_5xx
    assert ours_5xx == 0  # every 5xx came from the body's script, none from the toolkit
    figures.record(
        Row(
            "runner SIGKILLed mid-dispatch, restarted on the same data dir",
            f"{len(plans):,} tasks (15% failing first, 15% scheduled), "
            f"{len(worker.deliveries):,} deliveries, {extra} re-deliveries after kills",
            f"{kills} SIGKILLs at seeded random moments (seed {seed})",
            lost=0,
            duplicates=duplicates,
            server_errors=ours_5xx,
        )
    )


def test_sigkill_at_random_moments_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any, figures: Figures
) -> None:
    run_crash_scenario(tmp_path, monkeypatch, serve, figures, tasks=150, kills=5, seed=8)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_many_times_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any, figures: Figures
) -> None:
    run_crash_scenario(tmp_path, monkeypatch, serve, figures, tasks=2000, kills=20, seed=88)
