"""TaskToolkit: the Flask extension that holds the verifier and the dedup store of an app."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from tasktoolkit.dedup.base import DEFAULT_LEASE_S, DEFAULT_TTL_S, DedupStore
from tasktoolkit.dedup.url import store_from_url
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.oidc import (
    DEFAULT_CLOCK_SKEW_S,
    EMULATOR_HOST_ENV,
    GOOGLE_CERTS_URL,
    GOOGLE_ISSUERS,
    MAX_CLOCK_SKEW_S,
    OidcVerifier,
)
from tasktoolkit.routes import watch

if TYPE_CHECKING:
    from tasktoolkit.enqueue import Enqueuer

log = logging.getLogger("tasktoolkit")

EXTENSION_KEY = "tasktoolkit"
AUDIENCE = "TASKTOOLKIT_AUDIENCE"
AUDIENCE_FROM_REQUEST = "TASKTOOLKIT_AUDIENCE_FROM_REQUEST"
ALLOWED_SERVICE_ACCOUNTS = "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS"
ISSUERS = "TASKTOOLKIT_ISSUERS"
GOOGLE_CERTS = "TASKTOOLKIT_GOOGLE_CERTS_URL"
CLOCK_SKEW_S = "TASKTOOLKIT_CLOCK_SKEW_S"
STORE = "TASKTOOLKIT_STORE"
LEASE_S = "TASKTOOLKIT_LEASE_S"
RESULT_TTL_S = "TASKTOOLKIT_RESULT_TTL_S"
#: Longest lease and retention accepted (Cloud Tasks keeps a task at most 31 days).
MAX_DURATION_S = 31 * 86400.0

DEFAULTS: Mapping[str, Any] = {
    AUDIENCE: None,
    AUDIENCE_FROM_REQUEST: False,
    ALLOWED_SERVICE_ACCOUNTS: None,
    ISSUERS: list(GOOGLE_ISSUERS),
    GOOGLE_CERTS: GOOGLE_CERTS_URL,
    CLOCK_SKEW_S: DEFAULT_CLOCK_SKEW_S,
    STORE: None,
    LEASE_S: DEFAULT_LEASE_S,
    RESULT_TTL_S: DEFAULT_TTL_S,
}


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


def config_strings(config: Mapping[str, Any], key: str, *, split: bool) -> list[str]:
    """A config value that is a string or a list of strings, as a list (``split`` on commas)."""
    value = config.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")] if split else [value.strip()]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise ConfigurationError(f"{key} must be a string or a list of strings, got {value!r}")
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"{key} must hold non-empty strings, got {value!r}")
    return items


def _number(config: Mapping[str, Any], key: str, low: float, high: float, *, low_inclusive: bool) -> float:
    value = config.get(key)
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not ((low <= number if low_inclusive else low < number) and number <= high):
        bracket = "[" if low_inclusive else "("
        raise ConfigurationError(
            f"{key} must be a number of seconds in {bracket}{low:g}, {high:g}], got {value!r}"
        )
    return number


def _store(config: Mapping[str, Any], store: DedupStore | None) -> DedupStore:
    configured = config.get(STORE)
    if store is not None:
        return store
    if isinstance(configured, DedupStore):
        return configured
    if isinstance(configured, str):
        try:
            return store_from_url(configured)
        except ValueError as exc:
            raise ConfigurationError(f"{STORE}: {exc}") from exc
    if configured is None:
        raise ConfigurationError(
            f"no dedup store: pass TaskToolkit(app, store=...) or set {STORE} to a DedupStore or a URL "
            "('redis://host:6379/0', 'sqlite:///dedup.db', 'memory://')"
        )
    raise ConfigurationError(f"{STORE} must be a DedupStore or a URL, got {configured!r}")


def build_state(
    config: Mapping[str, Any], store: DedupStore | None, environ: Mapping[str, str]
) -> ToolkitState:
    """Validates the ``TASKTOOLKIT_*`` settings and builds the app's state.

    Raises:
        ConfigurationError: A required key is missing or a value is invalid (the message names the key).
    """
    audiences = config_strings(config, AUDIENCE, split=False)
    from_request = config.get(AUDIENCE_FROM_REQUEST)
    if not isinstance(from_request, bool):
        raise ConfigurationError(f"{AUDIENCE_FROM_REQUEST} must be true or false, got {from_request!r}")
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
            clock_skew_s=_number(config, CLOCK_SKEW_S, 0, MAX_CLOCK_SKEW_S, low_inclusive=True),
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
            store=_store(config, store),
            audience_from_request=from_request,
            lease_s=_number(config, LEASE_S, 0, MAX_DURATION_S, low_inclusive=False),
            ttl_s=_number(config, RESULT_TTL_S, 0, MAX_DURATION_S, low_inclusive=False),
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
        """Reads ``TASKTOOLKIT_*`` config and the emulator env, and registers the app's state.

        Raises:
            ConfigurationError: Missing or invalid settings; the app must not serve tasks half-configured.
                Also a route serving a task function without its ``@task_handler`` (decorators in the
                wrong order), now or, for routes added later, at the first request.
        """
        watch(app)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, list(value) if isinstance(value, list) else value)
        state = build_state(app.config, store or self._store, os.environ)
        previous = app.extensions.get(EXTENSION_KEY)
        if isinstance(previous, ToolkitState):
            previous.close()
        app.extensions[EXTENSION_KEY] = state

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
        from tasktoolkit.enqueue import client_for  # enqueue reads this module's config keys

        return client_for(app if app is not None else current_app._get_current_object())  # type: ignore[attr-defined]

    @staticmethod
    def use_client(client: Enqueuer, app: Flask | None = None) -> None:
        """Makes ``handler.enqueue`` use ``client`` for ``app`` (default: the current app)."""
        from tasktoolkit.enqueue import install_client

        install_client(app if app is not None else current_app._get_current_object(), client)  # type: ignore[attr-defined]
