"""The runner's canonical codes as gRPC status codes (both are google.rpc.Code numbers)."""

from __future__ import annotations

import grpc

from local_runner.errors import Code

_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def grpc_status(code: Code) -> grpc.StatusCode:
    """The gRPC status code with the same google.rpc number as ``code``."""
    return _BY_NUMBER[code.rpc_code]
