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

    def start(self, timeout_s: float = 60.0) -> FirestoreEmulator:
        """Starts the emulator, waits until it answers ``GET /`` with ``Ok``, and warms it up with one read.

        The first call after a start is slow (the JVM is cold); stores under test have budgets of 0.5 s.
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
                    client.collection("warm-up").document("warm-up").get(timeout=30)
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
