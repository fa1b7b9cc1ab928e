"""The console's Jinja2 environment: templates shipped as package data, autoescaping always on."""

from __future__ import annotations

import datetime

import jinja2

from local_runner.console.stats import COUNT_CAP
from local_runner.model import QueueState


def environment() -> jinja2.Environment:
    """A Jinja2 environment escaping every value, with the console's formatting filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("local_runner.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, seconds=seconds, capped=capped, state_name=state_name)
    return env


def when(instant: float | None) -> str:
    """An instant in UTC, to the millisecond (``-`` for none)."""
    if instant is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(instant, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def seconds(value: float | None) -> str:
    """A duration: ``850 ms``, ``12.5 s``, ``3 min 20 s``, ``2 h 5 min`` (``-`` for none)."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def ago(instant: float | None, now: float) -> str:
    """How long before (or after) ``now`` an instant is: ``5.0 s ago``, ``in 2 min 0 s``."""
    if instant is None:
        return "-"
    delta = now - instant
    return f"{seconds(delta)} ago" if delta >= 0 else f"in {seconds(-delta)}"


def capped(count: int) -> str:
    """A count read with :data:`~local_runner.console.stats.COUNT_CAP`: ``10,000+`` when it hit the cap."""
    return f"{COUNT_CAP:,}+" if count > COUNT_CAP else f"{count:,}"


def state_name(state: QueueState) -> str:
    """``RUNNING``, ``PAUSED``, ``DISABLED``."""
    return state.name
