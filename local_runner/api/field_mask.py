"""UpdateQueue's ``updateMask``: validate the paths, then merge the request into the stored queue.

The merge works on the proto3 JSON form (the codec turns it back into a model and validates it), so a
masked field absent from the request is cleared and then takes its default, as in the real service.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from local_runner.api.request import camel
from local_runner.codec.scalars import JsonObject
from local_runner.errors import InvalidArgument

_TOKEN_OIDC = {"serviceAccountEmail": None, "audience": None}
_TOKEN_OAUTH = {"serviceAccountEmail": None, "scope": None}
#: The Queue message's fields (lowerCamelCase); ``None`` marks a leaf (scalar, list or map).
QUEUE_SCHEMA: dict[str, Any] = {
    "name": None,
    "appEngineRoutingOverride": {"service": None, "version": None, "instance": None, "host": None},
    "httpTarget": {
        "uriOverride": {
            "scheme": None,
            "host": None,
            "port": None,
            "pathOverride": {"path": None},
            "queryOverride": {"queryParams": None},
            "uriOverrideEnforceMode": None,
        },
        "httpMethod": None,
        "headerOverrides": None,
        "oidcToken": _TOKEN_OIDC,
        "oauthToken": _TOKEN_OAUTH,
    },
    "rateLimits": {"maxDispatchesPerSecond": None, "maxBurstSize": None, "maxConcurrentDispatches": None},
    "retryConfig": {
        "maxAttempts": None,
        "maxRetryDuration": None,
        "minBackoff": None,
        "maxBackoff": None,
        "maxDoublings": None,
    },
    "state": None,
    "purgeTime": None,
    "stackdriverLoggingConfig": {"samplingRatio": None},
}
#: Paths that never change through UpdateQueue: the name, and output-only fields.
_IGNORED = ("name", "state", "purgeTime", "rateLimits.maxBurstSize")


def parse_update_mask(text: str) -> list[str]:
    """Split a FieldMask (comma-separated, lowerCamelCase or snake_case) into lowerCamelCase paths.

    Raises:
        InvalidArgument: a path that names no Queue field.
    """
    paths: list[str] = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        path = ".".join(camel(part) for part in raw.split("."))
        node: Any = QUEUE_SCHEMA
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise InvalidArgument(f'Invalid update_mask provided: "{raw}" is not a field of Queue.')
            node = node[part]
        paths.append(path)
    return paths


def camelize(document: Mapping[str, Any], schema: Mapping[str, Any] = QUEUE_SCHEMA) -> JsonObject:
    """A copy of a Queue document with known snake_case keys renamed; unknown keys are kept as is."""
    out: JsonObject = {}
    for key, value in document.items():
        name = camel(key)
        if name not in schema:
            out[key] = value
            continue
        sub = schema[name]
        out[name] = camelize(value, sub) if isinstance(sub, Mapping) and isinstance(value, Mapping) else value
    return out


def overlay(base: Mapping[str, Any], patch: Mapping[str, Any]) -> JsonObject:
    """``base`` with every field of ``patch`` written over it, objects merged key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_mask(base: Mapping[str, Any], patch: Mapping[str, Any], paths: Iterable[str]) -> JsonObject:
    """``base`` with each masked path copied from ``patch`` (or removed when ``patch`` lacks it)."""
    out = copy.deepcopy(dict(base))
    for path in paths:
        if path in _IGNORED:
            continue
        *parents, leaf = path.split(".")
        source: Any = patch
        target = out
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        value = source.get(leaf) if isinstance(source, Mapping) else None
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = copy.deepcopy(value)
    return out
