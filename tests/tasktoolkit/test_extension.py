"""Start-up: invalid config fails closed with clear messages; decorator options are checked when applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import tasktoolkit
from tasktoolkit import ConfigurationError, TaskContext, TaskToolkit, TaskToolkitError, task_handler
from tasktoolkit.dedup import MemoryDedupStore, SQLiteDedupStore

GOOD: dict[str, Any] = {
    "TASKTOOLKIT_AUDIENCE": "https://worker-abc.a.run.app",
    "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": ["tasks@my-proj.iam.gserviceaccount.com"],
}


def test_public_names() -> None:
    assert set(tasktoolkit.__all__) == {
        "ApiError",
        "ConfigurationError",
        "FanOutResult",
        "PermanentFailure",
        "RetryTask",
        "ScheduleContext",
        "TaskAlreadyExists",
        "TaskContext",
        "TaskToolkit",
        "TaskToolkitError",
        "fan_out",
        "scheduled_handler",
        "task_handler",
    }
    for name in (
        "ApiError",
        "ConfigurationError",
        "PermanentFailure",
        "RetryTask",
        "TaskAlreadyExists",
    ):
        assert issubclass(getattr(tasktoolkit, name), TaskToolkitError)
    assert not hasattr(tasktoolkit.errors, "CloudTasksError")  # one name per class


def test_init_app_later_and_state(apps: Any) -> None:
    store = MemoryDedupStore()
    toolkit = TaskToolkit(store=store)
    app = apps(**GOOD)
    toolkit.init_app(app)
    state = TaskToolkit.state(app)
    assert state.store is store
    assert state.lease_s == 600 and state.ttl_s == 86400
    assert state.verifier.audiences == ("https://worker-abc.a.run.app",)
    assert state.verifier.clock_skew_s == 10
    assert app.config["TASKTOOLKIT_ISSUERS"] == ["https://accounts.google.com", "accounts.google.com"]
    with app.app_context():
        assert TaskToolkit.state() is state


def test_missing_audience_and_allowlist_fail_at_start_up(apps: Any) -> None:
    with pytest.raises(ConfigurationError) as error:
        TaskToolkit(apps(), store=MemoryDedupStore())
    message = str(error.value)
    assert "refuses to start without TASKTOOLKIT_AUDIENCE and TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS" in message


def test_missing_allowlist_alone_is_named(apps: Any) -> None:
    with pytest.raises(ConfigurationError, match="without TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS:"):
        TaskToolkit(apps(TASKTOOLKIT_AUDIENCE="https://x"), store=MemoryDedupStore())


def test_audience_from_request_replaces_an_explicit_audience(apps: Any) -> None:
    app = apps(
        TASKTOOLKIT_AUDIENCE_FROM_REQUEST=True,
        TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS="a@p.iam.gserviceaccount.com, b@p.iam.gserviceaccount.com",
    )
    TaskToolkit(app, store=MemoryDedupStore())
    state = TaskToolkit.state(app)
    assert state.audience_from_request
    assert state.verifier.allowed_emails == {"a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"}


def test_missing_store_fails_at_start_up(apps: Any) -> None:
    with pytest.raises(ConfigurationError, match="no dedup store: pass TaskToolkit"):
        TaskToolkit(apps(**GOOD))


def test_store_from_config(apps: Any, tmp_path: Path) -> None:
    app = apps(**GOOD, TASKTOOLKIT_STORE=f"sqlite:///{tmp_path}/d.db")
    TaskToolkit(app)
    store = TaskToolkit.state(app).store
    assert isinstance(store, SQLiteDedupStore)
    store.close()
    instance = MemoryDedupStore()
    app = apps(**GOOD, TASKTOOLKIT_STORE=instance)
    TaskToolkit(app)
    assert TaskToolkit.state(app).store is instance


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TASKTOOLKIT_STORE", "ftp://x", "TASKTOOLKIT_STORE: unknown dedup store URL"),
        ("TASKTOOLKIT_STORE", 42, "TASKTOOLKIT_STORE must be a DedupStore or a URL"),
        ("TASKTOOLKIT_AUDIENCE", 7, "TASKTOOLKIT_AUDIENCE must be a string or a list"),
        ("TASKTOOLKIT_AUDIENCE", ["https://x", ""], "TASKTOOLKIT_AUDIENCE must hold non-empty strings"),
        (
            "TASKTOOLKIT_AUDIENCE_FROM_REQUEST",
            "yes",
            "TASKTOOLKIT_AUDIENCE_FROM_REQUEST must be true or false",
        ),
        (
            "TASKTOOLKIT_CLOCK_SKEW_S",
            301,
            r"TASKTOOLKIT_CLOCK_SKEW_S must be a number of seconds in \[0, 300\]",
        ),
        ("TASKTOOLKIT_CLOCK_SKEW_S", True, "TASKTOOLKIT_CLOCK_SKEW_S must be a number"),
        ("TASKTOOLKIT_LEASE_S", 0, r"TASKTOOLKIT_LEASE_S must be a number of seconds in \(0, 2.6784e\+06\]"),
        ("TASKTOOLKIT_RESULT_TTL_S", "1d", "TASKTOOLKIT_RESULT_TTL_S must be a number"),
        ("TASKTOOLKIT_ISSUERS", ["https://evil.example.com"], "google_issuers must be among"),
        ("TASKTOOLKIT_GOOGLE_CERTS_URL", "http://certs.example.com", "google_certs_url must be an https URL"),
    ],
)
def test_invalid_settings_name_the_key(apps: Any, key: str, value: Any, message: str) -> None:
    store = None if key == "TASKTOOLKIT_STORE" else MemoryDedupStore()
    with pytest.raises(ConfigurationError, match=message):
        TaskToolkit(apps(**{**GOOD, key: value}), store=store)


def test_malformed_emulator_host_fails_at_start_up(apps: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", "http://localhost:8123")
    with pytest.raises(ConfigurationError, match="CLOUD_TASKS_EMULATOR_HOST must be host:port"):
        TaskToolkit(apps(**GOOD), store=MemoryDedupStore())


def test_handler_of_an_uninitialized_app_fails_closed() -> None:
    app = Flask("t")

    @app.post("/t")
    @task_handler
    def handle(payload: Any, task: TaskContext) -> Any:
        raise AssertionError("must not run")

    response = app.test_client().post("/t", json={})
    assert response.status_code == 500


def ok(payload: Any, task: TaskContext) -> Any:
    return {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dedup_key": "queue/task"}, "dedup_key must be a callable"),
        ({"dedup_key": lambda payload: "k"}, r"dedup_key must accept \(payload, task\)"),
        ({"lease_s": 0}, "lease_s must be a number of seconds > 0"),
        ({"ttl_s": float("nan")}, "ttl_s must be a number of seconds > 0"),
    ],
)
def test_decorator_options_are_validated_when_applied(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        task_handler(**options)(ok)


def test_decorator_rejects_async_and_wrong_arity_functions() -> None:
    async def coroutine(payload: Any, task: TaskContext) -> Any:
        return {}

    def no_args() -> Any:
        return {}

    with pytest.raises(ConfigurationError, match="non-async"):
        task_handler(coroutine)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"must accept \(payload, task\)"):
        task_handler(no_args)


def test_decorated_function_keeps_its_name_and_stays_callable_by_flask() -> None:
    handler = task_handler(dedup_key=None)(ok)
    assert handler.__name__ == "ok" and handler.__wrapped__ is ok  # type: ignore[attr-defined]
    assert handler.options.dedup_key is None
