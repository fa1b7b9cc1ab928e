"""Stopping work in flight: a grace period, then cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def finish_or_cancel(tasks: Iterable[asyncio.Task[None]], grace: float) -> None:
    """Give ``tasks`` ``grace`` seconds to finish, then cancel those still running and wait for them."""
    pending = set(tasks)
    if not pending:
        return
    _, still_running = await asyncio.wait(pending, timeout=grace)
    for task in still_running:
        task.cancel()
    await asyncio.gather(*still_running, return_exceptions=True)
