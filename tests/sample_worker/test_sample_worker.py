"""The sample worker's pieces, and its routes driven through FakeQueue (no processes, a virtual clock)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sample_worker.app import create_app
from sample_worker.config import Settings
from sample_worker.emails import Outbox, User, welcome_email
from sample_worker.handlers import make_thumbnail, send_welcome_email
from sample_worker.images import NotAnImage, png_size, solid_png, thumbnail_size
from tasktoolkit import ConfigurationError
from tasktoolkit.testing import FakeQueue

ADA = {"user_id": "ada", "email": "ada@example.com", "name": "Ada Lovelace"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = Settings.from_env(
        {"SAMPLE_DATA_DIR": str(tmp_path), "TASKTOOLKIT_STORE": "memory://", "SAMPLE_REMINDER_DELAY_S": "60"}
    )
    yield create_app(settings)


@pytest.fixture
def fake(app: Flask) -> FakeQueue:
    return FakeQueue(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- pure pieces -----------------------------------------------------------------------------------


def test_png_round_trip_and_thumbnail_sizes() -> None:
    assert png_size(solid_png(7, 3, (1, 2, 3))) == (7, 3)
    assert thumbnail_size(640, 480, 128) == (128, 96)
    assert thumbnail_size(300, 600, 128) == (64, 128)
    assert thumbnail_size(50, 20, 128) == (50, 20)  # never scaled up
    with pytest.raises(NotAnImage):
        png_size(b"%PDF-1.7 and more bytes than a PNG header")


def test_settings_defaults_derive_from_the_port_and_project() -> None:
    settings = Settings.from_env({"PORT": "9000", "TASKTOOLKIT_PROJECT": "p"})
    assert settings.base_url == settings.audience == "http://127.0.0.1:9000"
    assert settings.allowed_service_accounts == ("tasks@p.iam.gserviceaccount.com",)
    assert settings.store_url.startswith("sqlite:////") and settings.store_url.endswith("dedup.sqlite3")


@pytest.mark.parametrize(
    ("name", "value"),
    [("SAMPLE_REMINDER_DELAY_S", "soon"), ("SAMPLE_THUMBNAIL_OUTAGE_ATTEMPTS", "-1"), ("PORT", "99999")],
)
def test_settings_name_the_bad_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "payload",
    [
        {**ADA, "name": "Ada\nBcc: everyone@example.com"},
        {**ADA, "email": "ada@example.com, eve@example.com"},
        {**ADA, "user_id": "../ada"},
        {"user_id": "ada"},
        ["ada"],
    ],
)
def test_user_validation_refuses_malformed_input(payload: object) -> None:
    with pytest.raises(ValueError):
        User.from_json(payload)


def test_outbox_writes_readable_messages(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.send(welcome_email(User.from_json(ADA)), task="emails/t1")
    [message] = outbox.messages()
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    assert message["X-Sample-Task"] == "emails/t1"


# -- routes and handlers through FakeQueue ----------------------------------------------------------


def test_signup_refuses_bad_input_without_enqueueing(client: FlaskClient, fake: FakeQueue) -> None:
    response = client.post("/signup", json={**ADA, "email": "not an address"})
    assert response.status_code == 400 and "email" in response.json["error"]
    assert fake.created == []


def test_signup_enqueues_two_named_tasks_once(client: FlaskClient, fake: FakeQueue) -> None:
    assert client.post("/signup", json=ADA).status_code == 201
    assert client.post("/signup", json=ADA).json == {"user_id": "ada", "status": "already signed up"}
    assert sorted(task.url.rpartition("/")[2] for task in fake.created) == [
        "send-reminder",
        "send-welcome-email",
    ]


def test_reminder_waits_for_its_delay(client: FlaskClient, fake: FakeQueue, tmp_path: Path) -> None:
    client.post("/signup", json=ADA)
    fake.run_until_idle()
    assert len(Outbox(tmp_path / "outbox").messages()) == 1
    assert fake.advance(seconds=59) == []
    [reminder] = fake.advance(seconds=1)
    assert reminder.status == 200 and reminder.url.endswith("/tasks/send-reminder")


def test_a_second_welcome_task_is_absorbed_by_the_handler(
    app: Flask, fake: FakeQueue, tmp_path: Path
) -> None:
    with app.app_context():
        send_welcome_email.enqueue(ADA, name="first")
        send_welcome_email.enqueue(ADA, name="second")
    deliveries = fake.run_until_idle()
    assert [d.status for d in deliveries] == [200, 200]
    assert deliveries[1].response_headers.get("X-TaskToolkit-Replayed") == "true"
    assert len(Outbox(tmp_path / "outbox").messages()) == 1


@pytest.mark.parametrize(
    "payload",
    [{"user_id": "ada"}, {"image_id": "../etc/passwd", "content_type": "image/png"}, "not an object"],
)
def test_bad_task_payloads_are_acknowledged_not_retried(app: Flask, fake: FakeQueue, payload: object) -> None:
    handler = send_welcome_email if isinstance(payload, dict) and "user_id" in payload else make_thumbnail
    with app.app_context():
        handler.enqueue(payload)
    [delivery] = fake.run_until_idle()
    assert delivery.status == 200
    assert delivery.response_json == {"acknowledged": True, "outcome": "permanent_failure"}


def test_thumbnail_of_a_missing_upload_fails_for_good(app: Flask, fake: FakeQueue) -> None:
    with app.app_context():
        make_thumbnail.enqueue({"image_id": "ghost", "content_type": "image/png"})
    assert [d.status for d in fake.run_until_idle()] == [503, 503, 200]  # the outage first, then the verdict
    assert fake.deliveries[-1].response_json["outcome"] == "permanent_failure"


def test_upload_refuses_unsafe_ids_and_empty_bodies(client: FlaskClient, fake: FakeQueue) -> None:
    assert client.put("/images/.hidden", data=b"x").status_code == 400
    assert client.put("/images/ok", data=b"").status_code == 400
    assert client.get("/images/never-uploaded").status_code == 404
    assert fake.created == []


def test_the_demo_and_tests_run_the_dockerfile_command() -> None:
    from sample_worker.launch import APP, GUNICORN

    dockerfile = (Path(__file__).resolve().parents[2] / "sample_worker" / "Dockerfile").read_text(
        encoding="utf-8"
    )
    [cmd] = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == ["gunicorn", *GUNICORN[2:], APP]


# -- the weekly digest -----------------------------------------------------------------------------


def test_the_weekly_digest_fires_monday_morning_in_london_and_mails_each_user_once(app: Flask) -> None:
    fake = FakeQueue(app, start=dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC), duplicate_deliveries=True)
    client = app.test_client()
    grace = {"user_id": "grace", "email": "grace@example.com", "name": "Grace Hopper"}
    for user in (ADA, grace):
        assert client.post("/signup", json=user).status_code == 201
    fake.run_until_idle()
    fake.advance(days=5, hours=21)  # Monday 30 November, 09:00 GMT
    fires = fake.scheduler.fires_of("weekly-digest")
    assert [(fire.schedule_time, fire.duplicate) for fire in fires] == [
        (dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC), True),
    ]
    assert fires[0].response_json == {"week": "2026-11-30", "enqueued": 2, "existing": 0}
    assert fires[1].response_headers["X-TaskToolkit-Replayed"] == "true"
    outbox = Outbox(app.extensions["sample_worker"].settings.data_dir / "outbox")
    digests = [message for message in outbox.messages() if str(message["Subject"]).startswith("Your week")]
    assert sorted(str(message["To"]) for message in digests) == [
        "Ada Lovelace <ada@example.com>",
        "Grace Hopper <grace@example.com>",
    ]
