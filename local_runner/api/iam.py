"""google.iam.v1 Policy documents: validated and normalized for storage, echoed with an etag.

The runner stores policies per queue but never enforces them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from local_runner.api.request import check_fields, is_int32
from local_runner.codec.scalars import JsonObject
from local_runner.errors import InvalidArgument

#: The etag the real service returns for a resource that never had a policy.
EMPTY_ETAG = "ACAB"
_LOG_TYPES = ("LOG_TYPE_UNSPECIFIED", "ADMIN_READ", "DATA_WRITE", "DATA_READ")
_POLICY_FIELDS = ("version", "bindings", "auditConfigs", "etag")


def _invalid(path: str, type_name: str, value: object) -> InvalidArgument:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return InvalidArgument(f"Invalid value at '{path}' ({type_name}), {shown[:80]}")


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid(path, "TYPE_STRING", value)
    return value


def _strings(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _invalid(path, "TYPE_STRING", value)
    return [_string(item, f"{path}[{index}]") for index, item in enumerate(value)]


def _objects(value: object, path: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise _invalid(path, "TYPE_MESSAGE", value)
    return value


def _binding(data: Mapping[str, Any], path: str) -> JsonObject:
    fields = check_fields(data, ("role", "members", "condition"), path)
    out: JsonObject = {"role": _string(fields.get("role", ""), f"{path}.role")}
    out["members"] = _strings(fields.get("members", []), f"{path}.members")
    if "condition" in fields:
        if not isinstance(fields["condition"], Mapping):
            raise _invalid(f"{path}.condition", "google.type.Expr", fields["condition"])
        condition = check_fields(
            fields["condition"], ("expression", "title", "description", "location"), f"{path}.condition"
        )
        out["condition"] = {k: _string(v, f"{path}.condition.{k}") for k, v in condition.items()}
    return out


def _log_type(value: object, path: str) -> str:
    if isinstance(value, str) and value in _LOG_TYPES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(_LOG_TYPES):
        return _LOG_TYPES[value]
    raise _invalid(path, "type.googleapis.com/google.iam.v1.AuditLogConfig.LogType", value)


def _audit_config(data: Mapping[str, Any], path: str) -> JsonObject:
    fields = check_fields(data, ("service", "auditLogConfigs"), path)
    configs = []
    for index, item in enumerate(_objects(fields.get("auditLogConfigs", []), f"{path}.audit_log_configs")):
        where = f"{path}.audit_log_configs[{index}]"
        config = check_fields(item, ("logType", "exemptedMembers"), where)
        configs.append(
            {
                "logType": _log_type(config.get("logType", 0), f"{where}.log_type"),
                "exemptedMembers": _strings(config.get("exemptedMembers", []), f"{where}.exempted_members"),
            }
        )
    return {"service": _string(fields.get("service", ""), f"{path}.service"), "auditLogConfigs": configs}


def normalize_policy(data: object, path: str = "policy") -> JsonObject:
    """A Policy document checked field by field, without its etag (the store computes that)."""
    if not isinstance(data, Mapping):
        raise _invalid(path, "google.iam.v1.Policy", data)
    fields = check_fields(data, _POLICY_FIELDS, path)
    out: JsonObject = {}
    version = fields.get("version", 0)
    if not is_int32(version):
        raise _invalid(f"{path}.version", "TYPE_INT32", version)
    if version:
        out["version"] = version
    bindings = [
        _binding(item, f"{path}.bindings[{index}]")
        for index, item in enumerate(_objects(fields.get("bindings", []), f"{path}.bindings"))
    ]
    if bindings:
        out["bindings"] = bindings
    audit = [
        _audit_config(item, f"{path}.audit_configs[{index}]")
        for index, item in enumerate(_objects(fields.get("auditConfigs", []), f"{path}.audit_configs"))
    ]
    if audit:
        out["auditConfigs"] = audit
    if "etag" in fields:
        _string(fields["etag"], f"{path}.etag")
    return out


def with_etag(policy: Mapping[str, Any]) -> JsonObject:
    """The stored policy as returned: a copy with an etag derived from its content."""
    out: JsonObject = json.loads(json.dumps(policy))
    if not policy:
        out["etag"] = EMPTY_ETAG
        return out
    digest = hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).digest()[:8]
    out["etag"] = base64.b64encode(digest).decode("ascii")
    return out


def policy_to_json(policy: Mapping[str, Any], int_enums: bool = False) -> JsonObject:
    """The response form of a stored policy (audit log types as numbers on request)."""
    out = with_etag(policy)
    if int_enums:
        for audit in out.get("auditConfigs", []):
            for config in audit["auditLogConfigs"]:
                config["logType"] = _LOG_TYPES.index(config["logType"])
    return out


def check_permissions(data: object) -> list[str]:
    """TestIamPermissions' ``permissions``: strings without wildcards, duplicates dropped."""
    permissions = _strings(data if data is not None else [], "permissions")
    for permission in permissions:
        if "*" in permission:
            raise InvalidArgument(
                "Permissions with wildcards (such as '*' or 'storage.*') are not allowed in "
                "TestIamPermissions requests."
            )
    return list(dict.fromkeys(permissions))
