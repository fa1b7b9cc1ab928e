"""Unix-cron schedules in a time zone: validation and the next fire time (sans-IO).

Cloud Scheduler takes five unix-cron fields (minute, hour, day of month, month, day of week; names
``JAN``-``DEC`` and ``SUN``-``SAT``; 7 is Sunday) interpreted in an IANA time zone, UTC by default
(https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules; job.proto ``time_zone``). The
cron arithmetic, daylight saving time included, is cronsim's (Debian cron's rules: a wall time skipped
by a spring-forward fires once right after the gap; a wall time repeated by a fall-back fires once).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from local_runner.errors import InvalidArgument

#: The service's answer to a schedule or time zone it cannot read (gcloud shows it after INVALID_ARGUMENT).
INVALID_SCHEDULE = "Schedule or time zone is invalid."
#: Characters of cronsim's extensions Cloud Scheduler does not accept (``L``, ``W``, ``#``, ``?``).
_EXTENSIONS = re.compile(r"[LW#?]")
_NAMES = re.compile(r"\b(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT)\b")


@functools.lru_cache(maxsize=256)
def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (empty or ``utc``, any case: UTC).

    Raises:
        InvalidArgument: the name is not in the tz database.
    """
    if name == "" or name.lower() == "utc":
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(INVALID_SCHEDULE) from None


def check_schedule(schedule: str, zone: str) -> None:
    """Refuse what Cloud Scheduler refuses: not five unix-cron fields, or an unknown time zone.

    Raises:
        InvalidArgument: with the service's message, :data:`INVALID_SCHEDULE`.
    """
    next_fire(schedule, zone, 0.0)


def next_fire(schedule: str, zone: str, after: float) -> float:
    """The first fire time of ``schedule`` in ``zone`` strictly after ``after`` (epoch seconds)."""
    return _first(schedule, zone, int(after), reverse=False)


def latest_fire(schedule: str, zone: str, upto: float) -> float:
    """The last fire time of ``schedule`` in ``zone`` at or before ``upto``."""
    return _first(schedule, zone, int(upto) + 1, reverse=True)


def _first(schedule: str, zone: str, start: int, reverse: bool) -> float:
    fields = schedule.split()
    if len(fields) != 5 or _EXTENSIONS.search(_NAMES.sub("", schedule.upper())):
        raise InvalidArgument(INVALID_SCHEDULE)
    local = datetime.fromtimestamp(start, tz=UTC).astimezone(time_zone(zone))
    try:
        fire = next(iter(CronSim(" ".join(fields), local, reverse=reverse)))
    except (CronSimError, StopIteration):
        raise InvalidArgument(INVALID_SCHEDULE) from None
    return fire.timestamp()
