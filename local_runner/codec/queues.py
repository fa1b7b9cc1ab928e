"""Queue <-> proto3 JSON, for the REST API, the queue file and the SQLite store.

Also the message types a task shares with its queue: RetryConfig and the OIDC and OAuth tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from local_runner.codec.reader import Reader, as_enum
from local_runner.codec.scalars import (
    JsonObject,
    enum_to_json,
    format_duration,
    format_timestamp,
    invalid_value,
    snake,
)
from local_runner.model import (
    HttpMethod,
    HttpTarget,
    OAuthToken,
    OidcToken,
    Queue,
    QueueState,
    RateLimits,
    RetryConfig,
    UriOverride,
    check_headers,
)

T = TypeVar("T")

_QUEUE_FIELDS = (
    "name",
    "appEngineRoutingOverride",
    "httpTarget",
    "rateLimits",
    "retryConfig",
    "state",
    "purgeTime",
    "stackdriverLoggingConfig",
)
_RATE_FIELDS = ("maxDispatchesPerSecond", "maxBurstSize", "maxConcurrentDispatches")
RETRY_FIELDS = ("maxAttempts", "maxRetryDuration", "minBackoff", "maxBackoff", "maxDoublings")
TOKEN_OIDC_FIELDS = ("serviceAccountEmail", "audience")
TOKEN_OAUTH_FIELDS = ("serviceAccountEmail", "scope")


def _or_default(value: T | None, default: T, zero_means_default: bool) -> T:
    if value is None or (zero_means_default and not value):
        return default
    return value


def rate_limits_from_json(reader: Reader | None, zero_means_default: bool = True) -> RateLimits:
    """RateLimits; an absent field (and, with proto3 semantics, a zero one) takes the default."""
    if reader is None:
        return RateLimits()
    defaults = RateLimits()
    rate = _or_default(
        reader.number("maxDispatchesPerSecond"), defaults.max_dispatches_per_second, zero_means_default
    )
    concurrent = _or_default(
        reader.integer("maxConcurrentDispatches"), defaults.max_concurrent_dispatches, zero_means_default
    )
    reader.integer("maxBurstSize")  # output only: type-checked, then ignored
    return RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent)


def retry_config_from_json(reader: Reader | None, zero_means_default: bool = True) -> RetryConfig:
    """RetryConfig; absent fields (and, with proto3 semantics, zero scalars) take the default."""
    if reader is None:
        return RetryConfig()
    defaults = RetryConfig()
    min_backoff = reader.duration("minBackoff")
    max_backoff = reader.duration("maxBackoff")
    retry_duration = reader.duration("maxRetryDuration")
    return RetryConfig(
        max_attempts=_or_default(reader.integer("maxAttempts"), defaults.max_attempts, zero_means_default),
        max_retry_duration=retry_duration if retry_duration is not None else defaults.max_retry_duration,
        min_backoff=min_backoff if min_backoff is not None else defaults.min_backoff,
        max_backoff=max_backoff if max_backoff is not None else defaults.max_backoff,
        max_doublings=_or_default(reader.integer("maxDoublings"), defaults.max_doublings, zero_means_default),
    )


def oidc_from_json(reader: Reader | None) -> OidcToken | None:
    """An OidcToken message (HttpRequest's or HttpTarget's), if set."""
    if reader is None:
        return None
    return OidcToken(reader.string("serviceAccountEmail") or "", reader.string("audience") or "")


def oauth_from_json(reader: Reader | None) -> OAuthToken | None:
    """An OAuthToken message, if set; the scope defaults to cloud-platform."""
    if reader is None:
        return None
    scope = reader.string("scope")
    return OAuthToken(reader.string("serviceAccountEmail") or "", scope or OAuthToken("").scope)


#: UriOverride.Scheme and UriOverride.UriOverrideEnforceMode by number; 0 (unspecified) reads as unset.
_SCHEMES = ("", "HTTP", "HTTPS")
_ENFORCE_MODES = ("", "IF_NOT_EXISTS", "ALWAYS")


def _string_enum(reader: Reader, key: str, names: tuple[str, ...]) -> str | None:
    """An enum kept as its name in the model, given as a name or (as official clients send it) a number."""
    value = reader.raw(key)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise invalid_value(f"{reader.path}.{snake(key)}", "TYPE_ENUM", value)
        return names[value]
    return reader.string(key)


def _http_target_from_json(reader: Reader | None, check: bool) -> HttpTarget | None:
    """Queue-level routing; ``check``: refuse header overrides no HTTP request can carry."""
    if reader is None:
        return None
    uri = reader.message(
        "uriOverride", ("scheme", "host", "port", "pathOverride", "queryOverride", "uriOverrideEnforceMode")
    )
    override = None
    if uri is not None:
        path = uri.message("pathOverride", ("path",))
        query = uri.message("queryOverride", ("queryParams",))
        override = UriOverride(
            scheme=_string_enum(uri, "scheme", _SCHEMES) or "",
            host=uri.string("host") or "",
            port=uri.integer64("port") or 0,
            path=(path.string("path") or "") if path else "",
            query=(query.string("queryParams") or "") if query else "",
            enforce_mode=_string_enum(uri, "uriOverrideEnforceMode", _ENFORCE_MODES) or "ALWAYS",
        )
    headers: list[tuple[str, str]] = []
    raw_overrides = reader.raw("headerOverrides")
    if raw_overrides is not None:
        if not isinstance(raw_overrides, list):
            raise invalid_value(f"{reader.path}.header_overrides", "HeaderOverride", raw_overrides)
        for index, item in enumerate(raw_overrides):
            entry = Reader(item, f"{reader.path}.header_overrides[{index}]", ("header",))
            header = entry.message("header", ("key", "value"))
            if header is not None:
                headers.append((header.string("key") or "", header.string("value") or ""))
    if check:
        check_headers(headers, "HttpTarget.headerOverrides")
    return HttpTarget(
        uri_override=override,
        http_method=reader.enum("httpMethod", HttpMethod) or HttpMethod.HTTP_METHOD_UNSPECIFIED,
        header_overrides=tuple(headers),
        oidc_token=oidc_from_json(reader.message("oidcToken", TOKEN_OIDC_FIELDS)),
        oauth_token=oauth_from_json(reader.message("oauthToken", TOKEN_OAUTH_FIELDS)),
    )


def queue_from_json(data: object, path: str = "queue", zero_means_default: bool = True) -> Queue:
    """A Queue from its JSON form; output-only fields (state, purgeTime, maxBurstSize) are ignored.

    With ``zero_means_default`` (API and queue-file input, proto3 semantics) a zero rate, concurrency,
    attempt count or doubling count takes the default, and a header override no HTTP request can carry
    is refused; the store reads its own documents exactly as they were written.
    """
    reader = Reader(data, path, _QUEUE_FIELDS)
    logging = reader.message("stackdriverLoggingConfig", ("samplingRatio",))
    reader.message("appEngineRoutingOverride", ("service", "version", "instance", "host"))
    reader.enum("state", QueueState)
    reader.timestamp("purgeTime")
    return Queue(
        name=reader.string("name") or "",
        rate_limits=rate_limits_from_json(reader.message("rateLimits", _RATE_FIELDS), zero_means_default),
        retry_config=retry_config_from_json(reader.message("retryConfig", RETRY_FIELDS), zero_means_default),
        http_target=_http_target_from_json(
            reader.message(
                "httpTarget", ("uriOverride", "httpMethod", "headerOverrides", "oidcToken", "oauthToken")
            ),
            check=zero_means_default,
        ),
        logging_sampling_ratio=logging.number("samplingRatio") if logging else None,
    )


def queue_state_from_json(data: object) -> QueueState | None:
    """The ``state`` field of a queue document, if any (the queue file may set PAUSED)."""
    if not isinstance(data, Mapping) or data.get("state") is None:
        return None
    state = as_enum(data["state"], QueueState)
    if state is None:
        raise invalid_value("queue.state", "State", data["state"])
    return state


def rate_limits_to_json(limits: RateLimits) -> JsonObject:
    """The JSON form of RateLimits, burst size included."""
    return {
        "maxDispatchesPerSecond": limits.max_dispatches_per_second,
        "maxBurstSize": limits.max_burst_size,
        "maxConcurrentDispatches": limits.max_concurrent_dispatches,
    }


def retry_config_to_json(config: RetryConfig) -> JsonObject:
    """The JSON form of RetryConfig; a zero maxRetryDuration (unlimited) is omitted like the service does."""
    out: JsonObject = {"maxAttempts": config.max_attempts}
    if config.max_retry_duration:
        out["maxRetryDuration"] = format_duration(config.max_retry_duration)
    out["minBackoff"] = format_duration(config.min_backoff)
    out["maxBackoff"] = format_duration(config.max_backoff)
    out["maxDoublings"] = config.max_doublings
    return out


def _token_to_json(token: OidcToken | OAuthToken) -> JsonObject:
    if isinstance(token, OidcToken):
        out = {"serviceAccountEmail": token.service_account_email}
        if token.audience:
            out["audience"] = token.audience
        return out
    return {"serviceAccountEmail": token.service_account_email, "scope": token.scope}


def tokens_to_json(oidc: OidcToken | None, oauth: OAuthToken | None) -> JsonObject:
    """The ``oidcToken`` and ``oauthToken`` fields of an HttpRequest or HttpTarget."""
    out: JsonObject = {}
    if oidc is not None:
        out["oidcToken"] = _token_to_json(oidc)
    if oauth is not None:
        out["oauthToken"] = _token_to_json(oauth)
    return out


def _http_target_to_json(target: HttpTarget, int_enums: bool) -> JsonObject:
    out: JsonObject = {}
    if target.uri_override is not None:
        uri = target.uri_override
        override: JsonObject = {}
        if uri.scheme:
            override["scheme"] = uri.scheme
        if uri.host:
            override["host"] = uri.host
        if uri.port:
            override["port"] = str(uri.port)
        if uri.path:
            override["pathOverride"] = {"path": uri.path}
        if uri.query:
            override["queryOverride"] = {"queryParams": uri.query}
        override["uriOverrideEnforceMode"] = uri.enforce_mode
        out["uriOverride"] = override
    if target.http_method is not HttpMethod.HTTP_METHOD_UNSPECIFIED:
        out["httpMethod"] = enum_to_json(target.http_method, int_enums)
    if target.header_overrides:
        out["headerOverrides"] = [{"header": {"key": k, "value": v}} for k, v in target.header_overrides]
    return out | tokens_to_json(target.oidc_token, target.oauth_token)


def queue_to_json(queue: Queue, int_enums: bool = False) -> JsonObject:
    """The JSON form of a Queue as the real service returns it."""
    out: JsonObject = {
        "name": queue.name,
        "rateLimits": rate_limits_to_json(queue.rate_limits),
        "retryConfig": retry_config_to_json(queue.retry_config),
        "state": enum_to_json(queue.state, int_enums),
    }
    if queue.http_target is not None:
        out["httpTarget"] = _http_target_to_json(queue.http_target, int_enums)
    if queue.purge_time is not None:
        out["purgeTime"] = format_timestamp(queue.purge_time)
    if queue.logging_sampling_ratio is not None:
        out["stackdriverLoggingConfig"] = {"samplingRatio": queue.logging_sampling_ratio}
    return out
