"""Runner settings and the declarative queue file (REST field names, as ``gcloud ... describe`` prints)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from local_runner.codec.queues import queue_from_json, queue_state_from_json
from local_runner.engine.duplicates import check_rate
from local_runner.errors import ApiError, InvalidArgument, RunnerError
from local_runner.model import Queue, QueueState

#: The queue file's one key beyond the Queue resource: the queue's duplicate-delivery rate.
DUPLICATES_KEY = "duplicateDeliveries"


class ConfigError(RunnerError):
    """The settings or the queue file are invalid."""


@dataclass(frozen=True)
class RunnerSettings:
    """How ``runner serve`` runs."""

    host: str = "127.0.0.1"
    port: int = 8123
    #: Further ``Host`` names the API answers (``--allowed-host``); bound to another address than
    #: loopback, giving any also refuses the names not given (``local_runner.api.browser_guard``).
    allowed_hosts: tuple[str, ...] = ()
    #: Where the SQLite database and the OIDC signing key live; ``None`` keeps everything in memory.
    data_dir: Path | None = Path(".runner")
    project: str = "local-project"
    location: str = "us-central1"
    queues_file: Path | None = None
    #: Cloud Scheduler jobs to create or update at start (``runner serve --jobs``).
    jobs_file: Path | None = None
    #: How long a completed or deleted task's name stays blocked, in seconds.
    task_tombstone: float = 3600.0
    #: How long a deleted queue's name stays blocked, in seconds.
    queue_tombstone: float = 60.0
    #: Seconds attempts in flight get to finish on shutdown before they are re-queued.
    shutdown_grace: float = 5.0
    #: Serve the state-changing test aids (reset, replay) under ``/runner/v1/``.
    test_aids: bool = True
    #: Most requests in flight to one destination (scheme, host, port); ``None``: derived from the
    #: open-file limit (``local_runner.engine.slots.connection_limits``).
    max_connections_per_host: int | None = None
    #: Serve the developer console at ``/`` (``runner serve --no-console`` turns it off).
    console: bool = True
    #: Fraction of attempts sent twice on purpose (0: none; the queue file may set it per queue).
    duplicate_deliveries: float = 0.0

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"


@dataclass(frozen=True)
class QueueSpec:
    """One queue of the queue file, with the state it asks for (``None``: leave as is)."""

    queue: Queue
    state: QueueState | None
    #: ``duplicateDeliveries``: the fraction of this queue's attempts sent twice (``None``: the runner's).
    duplicate_deliveries: float | None = None


def yaml_items(path: Path, key: str = "queues") -> Iterable[object]:
    """The items of a YAML file of ``key`` (queues, jobs): a ``key:`` list, a list, or one per document."""
    noun = key.removesuffix("s")
    try:
        text = path.read_text(encoding="utf-8")
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except OSError as error:
        raise ConfigError(f"cannot read {noun} file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{noun} file {path} is not valid YAML: {error}") from error
    for doc in docs:
        if isinstance(doc, dict) and set(doc) == {key}:
            if not isinstance(doc[key], list):
                raise ConfigError(f"{noun} file {path}: '{key}' must be a list of {key}")
            yield from doc[key]
        elif isinstance(doc, list):
            yield from doc
        else:
            yield doc


def load_queue_file(path: Path, parent: str) -> list[QueueSpec]:
    """Read queues from YAML: a ``queues:`` list, a plain list, or one queue per YAML document.

    A short ``name`` is placed under ``parent``. Errors name the file, the queue and the field.
    """
    specs: list[QueueSpec] = []
    for index, doc in enumerate(yaml_items(path)):
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ConfigError(f"queue file {path}: queue #{index + 1} needs a 'name'")
        data = dict(doc)
        if "/" not in data["name"]:
            data["name"] = f"{parent}/queues/{data['name']}"
        duplicates = data.pop(DUPLICATES_KEY, None)
        try:
            if duplicates is not None and (
                isinstance(duplicates, bool) or not isinstance(duplicates, int | float)
            ):
                raise InvalidArgument(
                    f"{DUPLICATES_KEY} must be a number between 0 and 1; got {duplicates!r}."
                )
            rate = None if duplicates is None else check_rate(duplicates, DUPLICATES_KEY)
            specs.append(QueueSpec(queue_from_json(data), queue_state_from_json(data), rate))
        except ApiError as error:
            raise ConfigError(f"queue file {path}: queue {data['name']!r}: {error.message}") from error
    return specs
