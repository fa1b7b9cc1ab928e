"""The runner's developer console: server-rendered pages over the service layer, same-origin only."""

from __future__ import annotations

from local_runner.console.app import Console

__all__ = ["Console"]
