"""The real Firestore emulator (``gcloud emulators firestore start``) as a child process, and its clients."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from unittest import mock

import pytest
import requests
from google.cloud import firestore

PROJECT = "tasktoolkit-test"
#: How long a starting emulator may take to answer: a cold JVM, which on a loaded machine (the test run
#: shares its cores) takes from 3 s to well over 30 s. A wait for a real server, never a measurement.
START_TIMEOUT_S = 180.0
#: Per-test timeout of a test that starts the emulator (pytest-timeout counts fixture set-up too).
TEST_TIMEOUT_S = 300
#: Store budget of the operations a test needs to succeed. The emulator answers in milliseconds when the
#: machine is idle, and in seconds when it is not; only tests of the budget itself use a short one.
PATIENT_TIMEOUT_S = 30.0
#: Store budget of a reconnect after the emulator restarted (the gRPC channel retries with backoff).
RECONNECT_TIMEOUT_S = 90.0
#: What a process needs in its environment to reach the emulator without probing for credentials.
NO_CREDENTIAL_PROBES = {"NO_GCE_CHECK": "True", "METADATA_SERVER_DETECTION": "none"}


def emulator_command() -> list[str]:
    """The emulator's command; a skip (a failure when CI=true) without gcloud or Java."""
    missing = [name for name in ("gcloud", "java") if shutil.which(name) is None]
    if missing:
        message = f"the Firestore emulator needs {' and '.join(missing)} (the Cloud SDK and a Java runtime)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return ["gcloud", "emulators", "firestore", "start"]


class FirestoreEmulator:
    """The Firestore emulator on a loopback port, in its own process group (gcloud starts a Java child).

    Its data lives in memory: a killed emulator restarts empty. :meth:`pause` stops it without losing data.
    """

    def __init__(self, command: list[str], port: int) -> None:
        self.command = command
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> FirestoreEmulator:
        """Starts the emulator, waits until it answers ``GET /`` with ``Ok``, and warms it up with one read.

        The first read after a start is slow (the JVM is cold: over 2 s on a loaded machine), longer than
        the budgets of the stores under test.
        """
        self._process = subprocess.Popen(
            [*self.command, f"--host-port={self.host}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if requests.get(f"http://{self.host}/", timeout=1).text.strip() == "Ok":
                    client = self.client()
                    client.collection("warm-up").document("warm-up").get(timeout=timeout_s)
                    client.close()  # type: ignore[no-untyped-call]
                    return self
            except requests.RequestException:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the Firestore emulator did not answer on {self.host}")
            threading.Event().wait(0.1)

    def kill(self) -> None:
        """Kills the whole process group (a paused one too) and waits for gcloud to exit; its data is gone."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):  # the whole group has exited
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(30)
        self._process = None

    def pause(self) -> None:
        """Freezes the emulator (SIGSTOP): calls time out; its data stays, as in a service outage."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Lets a paused emulator run again (SIGCONT)."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)

    def client(self, project: str = PROJECT) -> firestore.Client:
        """A client of this emulator (anonymous credentials, no metadata probe); the env is left unchanged."""
        with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": self.host, **NO_CREDENTIAL_PROBES}):
            return firestore.Client(project=project)

    def env(self) -> dict[str, str]:
        """Environment entries for a child process that should use this emulator."""
        return {"FIRESTORE_EMULATOR_HOST": self.host, **NO_CREDENTIAL_PROBES}


def uses_the_emulator(item: pytest.Item) -> bool:
    """Whether a collected test may start the emulator (through a fixture, or a ``firestore`` store kind)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    params = list(callspec.params.values()) if callspec is not None else []
    return bool(fixtures & {"firestore_emulator", "own_firestore_emulator"}) or (
        "store_factory" in fixtures and any(param == "firestore" for param in params)
    )


def allow_emulator_starts(items: list[pytest.Item]) -> None:
    """Gives each test that may start the emulator :data:`TEST_TIMEOUT_S` instead of the suite's timeout."""
    for item in items:
        if uses_the_emulator(item) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))
