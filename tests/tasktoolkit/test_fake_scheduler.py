"""The fake scheduler fires scheduled handlers on FakeQueue's clock; fan_out enqueues once per fire."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tasktoolkit import ConfigurationError, RetryTask, TaskContext, TaskToolkit, task_handler
from tasktoolkit.fanout import FanOutIncomplete, fan_out
from tasktoolkit.headers import ScheduleContext
from tasktoolkit.scheduled import scheduled_handler
from tasktoolkit.testing import FakeQueue, FakeQueueError

UTC = dt.UTC
USERS = ("ada", "grace", "linus")
#: A Tuesday; London leaves summer time on Sunday 25 October 2026.
TUESDAY = dt.datetime(2026, 10, 13, 12, 0, tzinfo=UTC)


class Digest:
    """A weekly job in London time that fans out one email task per user."""

    def __init__(self, app: Flask, **job: Any) -> None:
        self.fires: list[ScheduleContext] = []
        self.emails: list[tuple[str, str]] = []
        self.fail_after_fan_out = 0
        self.users = list(USERS)
        TaskToolkit(app)
        app.config.update(TASKTOOLKIT_BASE_URL="https://worker.example.test")

        @app.post("/tasks/email")
        @task_handler(queue="emails")
        def email(payload: Any, task: TaskContext) -> dict[str, Any]:
            self.emails.append((payload["user"], payload["week"]))
            return {"sent": payload["user"]}

        @app.post("/jobs/weekly-digest")
        @scheduled_handler("0 9 * * 1", time_zone="Europe/London", **job)
        def weekly_digest(fire: ScheduleContext) -> dict[str, Any]:
            self.fires.append(fire)
            week = f"{fire.schedule_time:%Y-%m-%d}"
            result = fan_out(email, fire, ((user, {"user": user, "week": week}) for user in self.users))
            if self.fail_after_fan_out:
                self.fail_after_fan_out -= 1
                raise RuntimeError("the run failed after its fan-out")
            return {"enqueued": result.enqueued, "existing": result.existing}

        self.app = app
        self.email = email


@pytest.fixture
def digest(make_app: Callable[..., Flask]) -> Callable[..., Digest]:
    return lambda **job: Digest(make_app(TASKTOOLKIT_STORE="memory://"), **job)


def test_jobs_fire_at_their_cron_times_in_their_time_zone(digest: Callable[..., Digest]) -> None:
    app = digest()
    fake = FakeQueue(app.app, start=TUESDAY)
    assert fake.scheduler.job_ids == ["weekly-digest"]
    fake.advance(days=21)
    fires = fake.scheduler.fires
    # 09:00 in London: 08:00 UTC in summer time, 09:00 UTC after 25 October.
    assert [fire.schedule_time for fire in fires] == [
        dt.datetime(2026, 10, 19, 8, tzinfo=UTC),
        dt.datetime(2026, 10, 26, 9, tzinfo=UTC),
        dt.datetime(2026, 11, 2, 9, tzinfo=UTC),
    ]
    assert [fire.time for fire in fires] == [fire.schedule_time for fire in fires]
    assert all(fire.ok for fire in fires)
    first = fires[0]
    assert first.headers["X-CloudScheduler-JobName"] == "weekly-digest"
    assert first.headers["X-CloudScheduler-ScheduleTime"] == "2026-10-19T08:00:00Z"
    assert first.headers["User-Agent"] == "Google-Cloud-Scheduler"
    assert fake.scheduler.next_fire("weekly-digest") == dt.datetime(2026, 11, 9, 9, tzinfo=UTC)
    assert len(app.emails) == 3 * len(USERS)


def test_task_deliveries_interleave_with_fires_in_virtual_time(digest: Callable[..., Digest]) -> None:
    app = digest()
    fake = FakeQueue(app.app, start=TUESDAY)
    with app.app.app_context():
        app.email.enqueue({"user": "early", "week": "-"}, delay=dt.timedelta(days=3))
        app.email.enqueue({"user": "late", "week": "-"}, delay=dt.timedelta(days=7))
    deliveries = fake.advance(days=7)
    [fire] = fake.scheduler.fires
    users = [delivery.task.json["user"] for delivery in deliveries]
    assert users[0] == "early" and users[-1] == "late"
    assert sorted(users[1:-1]) == sorted(USERS)
    assert deliveries[0].time < fire.time <= deliveries[1].time < deliveries[-1].time


def test_a_duplicated_fire_runs_the_body_once(digest: Callable[..., Digest]) -> None:
    app = digest()
    fake = FakeQueue(app.app, start=TUESDAY, duplicate_deliveries=True)
    fake.advance(days=5, hours=20)  # to the fire time: the refire below still carries a valid token
    first, duplicate = fake.scheduler.fires
    assert duplicate.duplicate and duplicate.headers == first.headers
    assert duplicate.response_headers["X-TaskToolkit-Replayed"] == "true"
    assert len(app.fires) == 1
    again = fake.scheduler.refire(first)
    assert again.response_json == first.response_json == {"enqueued": 3, "existing": 0}
    assert len(app.fires) == 1
    assert len(fake.created) == len(USERS)


def test_a_failed_fire_is_retried_and_its_retry_enqueues_only_what_is_missing(
    digest: Callable[..., Digest],
) -> None:
    app = digest(retry_count=2, min_backoff_s=30)
    fake = FakeQueue(app.app, start=TUESDAY, raise_errors=False)
    app.fail_after_fan_out = 1
    fake.advance(days=6)
    failed, retried = fake.scheduler.fires
    assert (failed.status, retried.status) == (500, 200)
    assert failed.schedule_time == retried.schedule_time
    assert retried.time - failed.time == dt.timedelta(seconds=30)
    assert [fire.fire_id for fire in app.fires] == ["weekly-digest@2026-10-19T08:00:00Z"] * 2
    assert retried.response_json == {"enqueued": 0, "existing": 3}
    assert len(fake.created) == len(USERS)
    assert sorted(user for user, _ in app.emails) == sorted(USERS)


def test_a_forced_run_is_a_new_fire_and_fans_out_again(digest: Callable[..., Digest]) -> None:
    app = digest(retry_count=1)
    fake = FakeQueue(app.app, start=TUESDAY, raise_errors=False)
    app.fail_after_fan_out = 1
    fake.advance(days=6, minutes=1)
    app.users.append("margaret")
    forced = fake.scheduler.run_job("weekly-digest")  # a new fire: the schedule time is now
    fake.run_until_idle()
    assert forced.schedule_time == fake.now != fake.scheduler.fires[0].schedule_time
    assert forced.response_json == {"enqueued": 4, "existing": 0}
    assert {week for _, week in app.emails} == {"2026-10-19"}
    assert len(fake.created) == 3 + 4


def test_run_job_fires_now_even_when_paused(digest: Callable[..., Digest]) -> None:
    app = digest(paused=True)
    fake = FakeQueue(app.app, start=TUESDAY)
    assert fake.scheduler.state("weekly-digest") == "PAUSED"
    assert fake.scheduler.next_fire("weekly-digest") is None
    fake.advance(days=14)
    assert fake.scheduler.fires == []
    fire = fake.scheduler.run_job("weekly-digest")
    assert fire.ok and fire.schedule_time == fake.now
    fake.run_until_idle()
    assert len(app.emails) == len(USERS)


def test_fan_out_twice_for_one_fire_enqueues_once(digest: Callable[..., Digest]) -> None:
    app = digest()
    fake = FakeQueue(app.app, start=TUESDAY)
    monday = ScheduleContext("weekly-digest", dt.datetime(2026, 10, 19, 8, tzinfo=UTC), b"")
    items = [(user, {"user": user, "week": "w"}) for user in USERS]
    with app.app.app_context():
        first = fan_out(app.email, monday, items)
        again = fan_out(app.email, monday, items)
        next_week = fan_out(app.email, ScheduleContext("weekly-digest", fake.now, b""), items)
    assert (first.enqueued, first.existing) == (3, 0)
    assert (again.enqueued, again.existing) == (0, 3)
    assert (next_week.enqueued, next_week.existing) == (3, 0)
    assert len(fake.created) == 6


def test_fan_out_failures_fail_the_fire(digest: Callable[..., Digest]) -> None:
    app = digest()
    fake = FakeQueue(app.app, start=TUESDAY, auto_create_queues=False)
    monday = ScheduleContext("weekly-digest", dt.datetime(2026, 10, 19, 8, tzinfo=UTC), b"")
    with app.app.app_context(), pytest.raises(FanOutIncomplete, match="failed 3") as raised:
        fan_out(app.email, monday, [(user, {}) for user in USERS])
    assert raised.value.result.failed[0][0] == "ada"
    assert fake.created == []


def test_an_invalid_item_key_fails_that_item_only(digest: Callable[..., Digest]) -> None:
    app = digest()
    fake = FakeQueue(app.app, start=TUESDAY)
    monday = ScheduleContext("weekly-digest", dt.datetime(2026, 10, 19, 8, tzinfo=UTC), b"")
    items = [("ada", {}), ("", {}), (7, {}), ("grace", {})]
    with app.app.app_context():
        result = fan_out(app.email, monday, items, raise_on_failure=False)
    assert (result.enqueued, result.existing) == (2, 0)
    assert [key for key, _ in result.failed] == ["", "7"]
    assert "fan_out item key must be a str of 1-500 characters" in str(result.failed[0][1])
    assert len(fake.created) == 2


def test_a_job_the_service_would_refuse_is_refused_by_the_fake(make_app: Callable[..., Flask]) -> None:
    app = make_app(TASKTOOLKIT_STORE="memory://")
    TaskToolkit(app)

    @app.post("/jobs/month-end")
    @scheduled_handler("0 9 L * *")  # cronsim reads L; Cloud Scheduler does not
    def month_end(fire: ScheduleContext) -> str:
        return "ok"

    with pytest.raises(ConfigurationError, match=r"job 'month-end': Schedule or time zone is invalid\."):
        FakeQueue(app)


def minute_job_app(make_app: Callable[..., Flask]) -> Flask:
    """An every-minute job beside a task that always asks to be retried."""
    app = make_app(TASKTOOLKIT_STORE="memory://")
    TaskToolkit(app)
    app.config.update(TASKTOOLKIT_BASE_URL="https://worker.example.test")

    @app.post("/jobs/tick")
    @scheduled_handler("* * * * *")
    def tick(fire: ScheduleContext) -> str:
        return "ok"

    @app.post("/tasks/flaky")
    @task_handler(queue="flaky")
    def flaky(payload: Any, task: TaskContext) -> str:
        raise RetryTask(1.0)

    app.config["flaky"] = flaky
    return app


def test_fires_do_not_spend_the_delivery_limit(make_app: Callable[..., Flask]) -> None:
    app = minute_job_app(make_app)
    # 1,440 fires against a limit of 10 deliveries: as 43,200 fires (30 days) against the default 10,000.
    fake = FakeQueue(app, start=TUESDAY, max_deliveries=10)
    fake.advance(days=1)
    assert len(fake.scheduler.fires) == 24 * 60 and all(fire.ok for fire in fake.scheduler.fires)
    assert fake.scheduler.next_fire("tick") == TUESDAY + dt.timedelta(days=1, minutes=1)

    fake.ensure_queue("flaky", retry_config={"max_attempts": -1})
    with app.app_context():
        app.config["flaky"].enqueue({})
    with pytest.raises(FakeQueueError, match=r"still busy after 10 deliveries \(max_deliveries\)"):
        fake.advance(hours=1)  # a task failing forever is still stopped, between the fires
    assert len(fake.deliveries) == 10
    with pytest.raises(FakeQueueError, match=r"not idle after 10 deliveries \(max_deliveries\)"):
        fake.run_until_idle()


def test_fires_have_their_own_limit(make_app: Callable[..., Flask]) -> None:
    fake = FakeQueue(minute_job_app(make_app), start=TUESDAY, max_fires=30)
    with pytest.raises(FakeQueueError, match=r"still busy after 30 job fires \(max_fires\)"):
        fake.advance(hours=1)
    assert len(fake.scheduler.fires) == 30
