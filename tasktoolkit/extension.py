"""TaskToolkit: the Flask extension that holds the verifier and the dedup store of an app."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from tasktoolkit.cli import cli_group
from tasktoolkit.config import (
    ALLOWED_SERVICE_ACCOUNTS,
    AUDIENCE,
    AUDIENCE_FROM_REQUEST,
    CLOCK_SKEW_S,
    DEFAULTS,
    EMULATOR_HOST_ENV,
    GOOGLE_CERTS,
    ISSUERS,
    LEASE_S,
    MAX_CLOCK_SKEW_S,
    MAX_DURATION_S,
    RESULT_TTL_S,
    config_flag,
    config_seconds,
    config_store,
    config_strings,
)
from tasktoolkit.dedup.base import DedupStore
from tasktoolkit.enqueue import Enqueuer, client_for, install_client
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.logging_json import configure_logging
from tasktoolkit.oidc import OidcVerifier
from tasktoolkit.routes import watch

log = logging.getLogger("tasktoolkit")

EXTENSION_KEY = "tasktoolkit"


@dataclass(frozen=True)
class ToolkitState:
    """What :class:`TaskToolkit` keeps for one app, in ``app.extensions["tasktoolkit"]``."""

    verifier: OidcVerifier
    store: DedupStore
    audience_from_request: bool
    lease_s: float
    ttl_s: float

    def close(self) -> None:
        """Closes the verifier's HTTP session (the store belongs to whoever created it)."""
        self.verifier.close()


def build_state(
    config: Mapping[str, Any], store: DedupStore | None, environ: Mapping[str, str]
) -> ToolkitState:
    """Validates the ``TASKTOOLKIT_*`` settings and builds the app's state.

    Raises:
        ConfigurationError: A required key is missing or a value is invalid (the message names the key).
    """
    audiences = config_strings(config, AUDIENCE, split=False)
    from_request = config_flag(config, AUDIENCE_FROM_REQUEST)
    allowed = config_strings(config, ALLOWED_SERVICE_ACCOUNTS, split=True)
    missing = [
        key
        for key, ok in ((AUDIENCE, audiences or from_request), (ALLOWED_SERVICE_ACCOUNTS, allowed))
        if not ok
    ]
    if missing:
        raise ConfigurationError(
            f"tasktoolkit refuses to start without {' and '.join(missing)}: set {AUDIENCE} to the audience "
            f"of the tasks' OIDC token (or {AUDIENCE_FROM_REQUEST}=True) and {ALLOWED_SERVICE_ACCOUNTS} "
            "to the service account emails allowed to call"
        )
    emulator_host = environ.get(EMULATOR_HOST_ENV) or None
    try:
        verifier = OidcVerifier(
            audiences=audiences,
            allowed_emails=allowed,
            google_issuers=config_strings(config, ISSUERS, split=True),
            google_certs_url=str(config.get(GOOGLE_CERTS)),
            emulator_host=emulator_host,
            clock_skew_s=config_seconds(config, CLOCK_SKEW_S, 0, MAX_CLOCK_SKEW_S, low_inclusive=True),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    if emulator_host is not None:
        log.warning(
            "%s=%s is set: also trusting OIDC tokens signed by the local runner at http://%s. "
            "Never set it in production.",
            EMULATOR_HOST_ENV,
            emulator_host,
            emulator_host,
        )
    try:
        return ToolkitState(
            verifier=verifier,
            store=config_store(config, store),
            audience_from_request=from_request,
            lease_s=config_seconds(config, LEASE_S, 0, MAX_DURATION_S, low_inclusive=False),
            ttl_s=config_seconds(config, RESULT_TTL_S, 0, MAX_DURATION_S, low_inclusive=False),
        )
    except BaseException:
        verifier.close()
        raise


class TaskToolkit:
    """Flask extension: verified, idempotent Cloud Tasks handlers (see :func:`tasktoolkit.task_handler`).

    Args:
        app: The app to initialize now, or ``None`` to call :meth:`init_app` later.
        store: The dedup store; overrides ``TASKTOOLKIT_STORE``.
    """

    def __init__(self, app: Flask | None = None, *, store: DedupStore | None = None) -> None:
        self._store = store
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, store: DedupStore | None = None) -> None:
        """Reads ``TASKTOOLKIT_*`` config and the emulator env; registers the app's state and CLI commands.

        The commands: ``flask tasktoolkit sync-jobs`` (see :func:`tasktoolkit.job_sync.sync_jobs`).

        Raises:
            ConfigurationError: Missing or invalid settings; the app must not serve tasks half-configured.
                Also a route serving a task function without its ``@task_handler`` (decorators in the
                wrong order), now or, for routes added later, at the first request.
        """
        watch(app)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, list(value) if isinstance(value, list) else value)
        configure_logging(app.config, os.environ)
        state = build_state(app.config, store or self._store, os.environ)
        previous = app.extensions.get(EXTENSION_KEY)
        if isinstance(previous, ToolkitState):
            previous.close()
        app.extensions[EXTENSION_KEY] = state
        app.cli.add_command(cli_group)

    @staticmethod
    def state(app: Flask | None = None) -> ToolkitState:
        """Returns the state of ``app`` (default: the current app).

        Raises:
            ConfigurationError: The app was not initialized with TaskToolkit.
        """
        target = app if app is not None else current_app
        state = target.extensions.get(EXTENSION_KEY)
        if not isinstance(state, ToolkitState):
            raise ConfigurationError("TaskToolkit is not initialized for this app: call TaskToolkit(app)")
        return state

    @staticmethod
    def client(app: Flask | None = None) -> Enqueuer:
        """The client that ``handler.enqueue`` uses for ``app`` (default: the current app).

        A :class:`~tasktoolkit.client.TasksClient` built on first use from ``TASKTOOLKIT_PROJECT`` and
        ``TASKTOOLKIT_LOCATION``, or whatever :meth:`use_client` installed (a test's fake queue).
        """
        return client_for(app if app is not None else current_app._get_current_object())  # type: ignore[attr-defined]

    @staticmethod
    def use_client(client: Enqueuer, app: Flask | None = None) -> None:
        """Makes ``handler.enqueue`` use ``client`` for ``app`` (default: the current app)."""
        install_client(app if app is not None else current_app._get_current_object(), client)  # type: ignore[attr-defined]
