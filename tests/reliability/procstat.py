"""Resident memory and open file descriptors of another process, sampled from /proc (Linux)."""

from __future__ import annotations

import os
import threading


def rss_bytes(pid: int) -> int:
    """The process's resident set size (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Samples a process's RSS and open fds on a thread until stopped; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = rss_bytes(pid)
        self.peak_fds = open_fds(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Take one sample now."""
        self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
        self.peak_fds = max(self.peak_fds, open_fds(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()
