"""Every ``TASKTOOLKIT_*`` setting: its key, its default and the parser that reads it from an app's config.

The extension (verifier, dedup store) and ``handler.enqueue`` (client, task options) both read their
settings here, so neither imports the other for a key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tasktoolkit.dedup.base import DEFAULT_LEASE_S, DEFAULT_TTL_S, DedupStore
from tasktoolkit.dedup.url import store_from_url
from tasktoolkit.errors import ConfigurationError

#: The environment variable naming a local runner (``host:port``), read by the client and the verifier.
EMULATOR_HOST_ENV = "CLOUD_TASKS_EMULATOR_HOST"
#: The environment variable naming a local Cloud Scheduler (``host:port``), read by the scheduler client
#: first; the runner serves both APIs on one port, so ``CLOUD_TASKS_EMULATOR_HOST`` is the fallback.
SCHEDULER_EMULATOR_HOST_ENV = "CLOUD_SCHEDULER_EMULATOR_HOST"
#: Google's ID token certificates and issuers, the verifier's defaults.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
DEFAULT_CLOCK_SKEW_S = 10.0
MAX_CLOCK_SKEW_S = 300.0
#: Longest lease and retention accepted (Cloud Tasks keeps a task at most 31 days).
MAX_DURATION_S = 31 * 86400.0

# Read by the extension: who may call, and the dedup store.
AUDIENCE = "TASKTOOLKIT_AUDIENCE"
AUDIENCE_FROM_REQUEST = "TASKTOOLKIT_AUDIENCE_FROM_REQUEST"
ALLOWED_SERVICE_ACCOUNTS = "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS"
ISSUERS = "TASKTOOLKIT_ISSUERS"
GOOGLE_CERTS = "TASKTOOLKIT_GOOGLE_CERTS_URL"
CLOCK_SKEW_S = "TASKTOOLKIT_CLOCK_SKEW_S"
STORE = "TASKTOOLKIT_STORE"
LEASE_S = "TASKTOOLKIT_LEASE_S"
RESULT_TTL_S = "TASKTOOLKIT_RESULT_TTL_S"
#: ``json``, ``text``, or unset (JSON on Cloud Run): read by the extension, see ``logging_json``.
LOG_FORMAT = "TASKTOOLKIT_LOG_FORMAT"
# Read by ``handler.enqueue``: where tasks go and whose token they carry.
PROJECT = "TASKTOOLKIT_PROJECT"
LOCATION = "TASKTOOLKIT_LOCATION"
BASE_URL = "TASKTOOLKIT_BASE_URL"
DEFAULT_QUEUE = "TASKTOOLKIT_DEFAULT_QUEUE"
SERVICE_ACCOUNT = "TASKTOOLKIT_SERVICE_ACCOUNT"

#: What ``TaskToolkit.init_app`` puts in an app's config for a key it does not set.
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
    LOG_FORMAT: None,
}


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


def config_string(config: Mapping[str, Any], key: str, *, required: str | None = None) -> str | None:
    """A string setting, or ``None`` when unset; ``required`` explains why a missing one is an error."""
    value = config.get(key)
    if value is None or value == "":
        if required is not None:
            raise ConfigurationError(f"{key} is not set: {required}")
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{key} must be a string, got {value!r}")
    return value


def token_service_account(config: Mapping[str, Any]) -> str | None:
    """Whose OIDC token tasks and jobs carry: ``TASKTOOLKIT_SERVICE_ACCOUNT``, or the one allowed account."""
    account = config_string(config, SERVICE_ACCOUNT)
    if account is None:
        allowed = config_strings(config, ALLOWED_SERVICE_ACCOUNTS, split=True)
        account = allowed[0] if len(allowed) == 1 else None
    return account


def token_audience(config: Mapping[str, Any]) -> str | None:
    """The audience of the OIDC token tasks and jobs carry: the first ``TASKTOOLKIT_AUDIENCE``, if any."""
    audiences = config_strings(config, AUDIENCE, split=False)
    return audiences[0] if audiences else None


def config_flag(config: Mapping[str, Any], key: str) -> bool:
    """A setting that must be ``True`` or ``False``."""
    value = config.get(key)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be true or false, got {value!r}")
    return value


def config_seconds(
    config: Mapping[str, Any], key: str, low: float, high: float, *, low_inclusive: bool
) -> float:
    """A number of seconds within ``(low, high]`` (or ``[low, high]`` when ``low_inclusive``)."""
    value = config.get(key)
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not ((low <= number if low_inclusive else low < number) and number <= high):
        bracket = "[" if low_inclusive else "("
        raise ConfigurationError(
            f"{key} must be a number of seconds in {bracket}{low:g}, {high:g}], got {value!r}"
        )
    return number


def config_store(config: Mapping[str, Any], store: DedupStore | None) -> DedupStore:
    """The dedup store: ``store`` if given, else ``TASKTOOLKIT_STORE`` (a store or a URL)."""
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
