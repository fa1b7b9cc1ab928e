"""GetCmekConfig and UpdateCmekConfig: the key name is stored per location, never used to encrypt.

The runner keeps its data in its own SQLite file; a configured key only makes the API answer as the real
service does, so code that manages CMEK can be exercised locally. Kept in memory, like IAM policies.
"""

from __future__ import annotations

import re

from local_runner.api.request import Call, camel, check_fields
from local_runner.codec.scalars import JsonObject
from local_runner.errors import InvalidArgument
from local_runner.model import parse_location

#: ``projects/P/locations/L/keyRings/R/cryptoKeys/K`` (cmek_config.proto).
_KMS_KEY = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
_SUFFIX = "/cmekConfig"


class CmekConfigs:
    """One CmekConfig per location; an unset one has an empty ``kmsKey`` (CMEK off)."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}

    def get(self, call: Call) -> JsonObject:
        """GetCmekConfig."""
        name = _config_name(call.params["name"])
        return _document(name, self._keys.get(name, ""))

    def update(self, call: Call) -> JsonObject:
        """UpdateCmekConfig: the body is the CmekConfig; ``updateMask`` may name only ``kms_key``."""
        name = _config_name(call.params["name"])
        body = check_fields(call.body, ("name", "kmsKey"), "cmek_config")
        if body.get("name") not in (None, "", name):
            raise InvalidArgument(
                f"cmek_config.name ('{body['name']}') must be the same as the name in the URL ('{name}')."
            )
        for path in filter(None, (part.strip() for part in call.query.get("updateMask", "").split(","))):
            if camel(path) != "kmsKey":
                raise InvalidArgument(f'Invalid update_mask provided: "{path}" is not a field of CmekConfig.')
        key = body.get("kmsKey", "")
        if not isinstance(key, str) or (key and not _KMS_KEY.fullmatch(key)):
            raise InvalidArgument(
                f"Invalid value at 'cmek_config.kms_key': {key!r} must be empty (CMEK off) or have the form "
                "projects/PROJECT_ID/locations/LOCATION_ID/keyRings/KEY_RING_ID/cryptoKeys/KEY_ID."
            )
        location = name.split("/")[3]
        if key and key.split("/")[3] != location:
            raise InvalidArgument(
                f"cmek_config.kms_key must be in the config's location ({location}); got {key}."
            )
        self._keys[name] = key
        return _document(name, key)


def _config_name(name: str) -> str:
    parse_location(name.removesuffix(_SUFFIX))
    return name


def _document(name: str, key: str) -> JsonObject:
    return {"name": name, "kmsKey": key} if key else {"name": name}
