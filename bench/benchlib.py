"""Shared parts of the benchmarks: child processes, the delivery sink, the peer, figures and results."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
#: Where results go (the smoke tests point BENCH_RESULTS elsewhere, keeping real results intact).
RESULTS = Path(os.environ.get("BENCH_RESULTS") or BENCH / "results")
VENV_BIN = Path(sys.executable).parent
PROJECT = "bench"
LOCATION = "local"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
#: The peer emulator and the venv the benchmarks install it into (never part of the project).
PEER_PACKAGE = "gcloud-tasks-emulator==0.6.2"
PEER_VENV = BENCH / ".peer-venv"
SERVICE_ACCOUNT = "bench@bench.iam.gserviceaccount.com"
AUDIENCE = "https://bench-worker.local"

_RUNNER_URL = re.compile(r"runner on (http://\S+)")


# -- figures and results ---------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model as lscpu prints it (``Model name``)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def python_loop_seconds(iterations: int = 10_000_000) -> float:
    """Seconds a fixed pure-Python loop takes here: the machine's speed, next to the figures."""
    started = time.perf_counter()
    total = 0
    for index in range(iterations):
        total += index
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


class Figures:
    """Prints one figure per line as it is measured and writes them all to ``bench/results/<name>.json``."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.params = {k: v for k, v in vars(args).items() if not callable(v)}
        self.figures: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []

    def add(self, key: str, label: str, value: float, unit: str, runs: Sequence[float] = ()) -> float:
        """Record and print ``label: value unit (runs ...)``."""
        detail = f" (runs {', '.join(_fmt(r) for r in runs)})" if len(runs) > 1 else ""
        print(f"{label}: {_fmt(value)} {unit}{detail}", flush=True)
        self.figures[key] = {"label": label, "value": value, "unit": unit, "runs": list(runs)}
        return value

    def note(self, text: str) -> None:
        """Print and keep a remark (a skipped part, a missing tool)."""
        print(f"note: {text}", flush=True)
        self.notes.append(text)

    def save(self) -> Path:
        """Write the JSON results file."""
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{self.name}.json"
        document = {
            "benchmark": self.name,
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "machine": machine(),
            "params": self.params,
            "figures": self.figures,
            "notes": self.notes,
        }
        out.write_text(json.dumps(document, indent=2) + "\n")
        return out


def parser(doc: str | None, runs: int) -> argparse.ArgumentParser:
    """An argument parser whose description is the script's one-line summary, with --runs and --smoke."""
    first = (doc or "").strip().splitlines()[0]
    p = argparse.ArgumentParser(description=first)
    p.add_argument("--runs", type=int, default=runs, help="runs whose median is reported")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run, no peer (proves it works)")
    return p


def parse(p: argparse.ArgumentParser, **smoke: Any) -> argparse.Namespace:
    """Parse the command line; with --smoke, one run and the given tiny sizes (and no peer)."""
    args = p.parse_args()
    if args.smoke:
        for key, value in {"runs": 1, **smoke}.items():
            setattr(args, key, value)
        if hasattr(args, "no_peer"):
            args.no_peer = True
    return args


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


#: Lowers the open-file soft limit (``ulimit -n``) to ``argv[1]``, then becomes ``argv[2:]`` (same PID).
_LIMIT_THEN_EXEC = (
    "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class Child:
    """A child process with its output in a log file; stopped by its own PID (and its group's)."""

    def __init__(
        self,
        command: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        open_files: int | None = None,
    ) -> None:
        if open_files is not None:
            command = [sys.executable, "-c", _LIMIT_THEN_EXEC, str(open_files), *command]
        self.command = list(command)
        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self, what: str) -> None:
        if not self.alive():
            raise RuntimeError(f"{what} exited with {self.process.returncode}:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the child's process group, wait, and kill it if it does not go."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self._log.close()

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the child in KiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]


def process_cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds used so far by the processes ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


class CpuSampler:
    """Samples a process's CPU seconds on a thread, to read its CPU over a wall-clock window afterwards."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time.time(), CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), process_cpu_seconds([self.pid])))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def cpu_at(self, moment: float) -> float:
        """CPU seconds used by ``moment`` (interpolated between the samples around it)."""
        before = [(t, cpu) for t, cpu in self.samples if t <= moment] or self.samples[:1]
        after = [(t, cpu) for t, cpu in self.samples if t >= moment] or self.samples[-1:]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 <= t0 else c0 + (c1 - c0) * (moment - t0) / (t1 - t0)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds used between two moments."""
        return self.cpu_at(end) - self.cpu_at(start)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers)."""
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


class Runner(Child):
    """``runner serve`` on a free port, on a data directory (SQLite, the default) or in memory."""

    def __init__(
        self,
        workdir: Path,
        data_dir: Path | None,
        *args: str,
        port: int = 0,
        checkout: Path = ROOT,
        open_files: int | None = None,
    ) -> None:
        """``checkout`` runs another copy of the code (a worktree of an older commit, for a baseline)."""
        storage = ["--in-memory"] if data_dir is None else ["--data-dir", str(data_dir)]
        command = [sys.executable, "-m", "local_runner", "serve", "--port", str(port), *storage, *args]
        log = workdir / f"runner-{time.monotonic_ns()}.log"
        super().__init__(command, log, cwd=checkout, open_files=open_files)
        self.url = ""

    def wait_ready(self, timeout: float = 60.0) -> Runner:
        def ready() -> bool:
            self.check_alive("runner serve")
            match = _RUNNER_URL.search(self.output())
            if match:
                self.url = match.group(1)
            return bool(self.url)

        wait_for(ready, timeout, "runner serve to start")
        return self

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


class Sink(Child):
    """``bench/sink.py``: a trivial aiohttp app recording when each task arrived."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        super().__init__([sys.executable, str(BENCH / "sink.py"), "--port", str(port)], workdir / "sink.log")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.session = requests.Session()
        wait_for(lambda: port_open(port) or not self.alive(), 30, "the sink to listen")
        self.check_alive("sink")

    def stats(self) -> dict[str, Any]:
        return dict(self.session.get(f"{self.url}/stats", timeout=30).json())

    def deliveries(self) -> dict[str, list[Any]]:
        return dict(self.session.get(f"{self.url}/deliveries", timeout=60).json())

    def reset(self) -> None:
        self.session.get(f"{self.url}/reset", timeout=30).raise_for_status()

    def wait_count(self, count: int, timeout: float) -> dict[str, Any]:
        """Wait until ``count`` deliveries arrived (or no new one for ``timeout`` seconds)."""
        last, last_change = -1, time.monotonic()
        while True:
            stats = self.stats()
            if stats["count"] >= count:
                return stats
            if stats["count"] != last:
                last, last_change = stats["count"], time.monotonic()
            elif time.monotonic() - last_change > timeout:
                raise TimeoutError(f"sink stuck at {stats['count']} of {count} deliveries")
            time.sleep(0.05)


class Gunicorn(Child):
    """``bench/flask_app.py`` under gunicorn with sync workers (keep the load generator's noise low)."""

    def __init__(self, workdir: Path, env: dict[str, str], workers: int = 2, checkout: Path = ROOT) -> None:
        """``checkout``: the code the workers import (gunicorn imports from its working directory first)."""
        port = free_port()
        command = [
            str(VENV_BIN / "gunicorn"),
            "-w",
            str(workers),
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--chdir",
            str(BENCH),
            "flask_app:app",
        ]
        super().__init__(command, workdir / f"gunicorn-{port}.log", env, cwd=checkout)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: port_open(port) or not self.alive(), 30, "gunicorn to listen")
        self.check_alive("gunicorn")
        wait_for(lambda: len(child_pids(self.pid)) >= workers, 30, "gunicorn workers")

    def worker_cpu(self) -> float:
        return process_cpu_seconds(child_pids(self.pid))


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory for data, logs and sockets, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        yield Path(tmp)


# -- the runner's REST API -------------------------------------------------------------------------


def queue_name(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


def create_queue(
    session: requests.Session, url: str, queue_id: str, rate: float | None = None, paused: bool = False
) -> None:
    """CreateQueue through REST, with an optional rate; optionally paused right after."""
    body: dict[str, Any] = {"name": queue_name(queue_id)}
    if rate is not None:
        body["rateLimits"] = {"maxDispatchesPerSecond": rate}
    response = session.post(f"{url}/v2/{PARENT}/queues", json=body, timeout=30)
    response.raise_for_status()
    if paused:
        session.post(f"{url}/v2/{queue_name(queue_id)}:pause", json={}, timeout=30).raise_for_status()


def resume_queue(session: requests.Session, url: str, queue_id: str) -> None:
    session.post(f"{url}/v2/{queue_name(queue_id)}:resume", json={}, timeout=30).raise_for_status()


def task_json(
    target: str, index: int, oidc: bool = False, schedule_time: str | None = None
) -> dict[str, Any]:
    """A CreateTask body: POST of a small JSON document to ``target``."""
    body = json.dumps({"n": index, "kind": "bench"}).encode()
    http: dict[str, Any] = {
        "url": target,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": base64.b64encode(body).decode(),
    }
    if oidc:
        http["oidcToken"] = {"serviceAccountEmail": SERVICE_ACCOUNT, "audience": AUDIENCE}
    task: dict[str, Any] = {"httpRequest": http}
    if schedule_time is not None:
        task["scheduleTime"] = schedule_time
    return {"task": task}


def rfc3339(epoch: float) -> str:
    """An RFC 3339 timestamp with microseconds (``Z``)."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- filling a store before the runner starts ------------------------------------------------------


#: Dispatches per second of each queue that ``populate`` writes.
RATE = 500.0


def populate(
    data_dir: Path,
    counts: dict[str, int],
    target: str,
    rate: float = RATE,
    concurrency: int = 1000,
    oidc: bool = False,
    batch: int = 50_000,
) -> float:
    """Write queues and their backlog straight into ``data_dir``'s SQLite store; returns seconds taken.

    Uses the runner's own store (schema and row encoding) but one transaction per ``batch`` rows, since
    CreateTask's one transaction per task would take minutes for a million tasks. Every task is due.
    """
    from local_runner.model import HttpRequest, OidcToken, Queue, RateLimits, Task
    from local_runner.store import DB_FILENAME, SQLiteTaskStore
    from local_runner.store import sqlite as sqlite_store

    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    store = SQLiteTaskStore(data_dir / DB_FILENAME)
    store._conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while filling; the runner uses its own
    token = OidcToken(SERVICE_ACCOUNT, AUDIENCE) if oidc else None
    now = time.time()
    try:
        for queue_id, count in counts.items():
            name = queue_name(queue_id)
            limits = RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrency)
            store.put_queue(Queue(name, rate_limits=limits))
            for start in range(0, count, batch):
                rows = [
                    sqlite_store._task_row(
                        Task(
                            f"{name}/tasks/t{i:08d}",  # in name order: appends to the name indexes
                            HttpRequest(
                                url=target,
                                headers={"Content-Type": "application/json"},
                                body=json.dumps({"n": i, "kind": "bench"}).encode(),
                                oidc_token=token,
                            ),
                            schedule_time=now,
                            create_time=now,
                        )
                    )
                    for i in range(start, min(count, start + batch))
                ]
                with store._write() as conn:
                    conn.executemany(sqlite_store._INSERT_TASK, rows)
    finally:
        store.close()
    return time.perf_counter() - started


# -- the peer: gcloud-tasks-emulator in its own venv -----------------------------------------------


def peer_python(install: bool = True) -> Path | None:
    """The peer venv's python, installing the peer there on first use; ``None`` if that fails."""
    python = PEER_VENV / "bin" / "python"
    if (PEER_VENV / "bin" / "gcloud-tasks-emulator").exists():
        return python
    if not install:
        return None
    print(f"installing {PEER_PACKAGE} into {PEER_VENV} (once) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PEER_PACKAGE],
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as error:
        print(f"cannot install the peer ({error}); its figures are skipped", flush=True)
        return None
    return python


class Peer(Child):
    """``gcloud-tasks-emulator start`` (gRPC) on a free port, quiet."""

    def __init__(self, workdir: Path, python: Path) -> None:
        port = free_port()
        command = [str(python.parent / "gcloud-tasks-emulator"), "start", f"--port={port}", "-q"]
        super().__init__(command, workdir / f"peer-{port}.log")
        self.python = python
        self.port = port
        wait_for(lambda: port_open(port) or not self.alive(), 60, "the peer to listen")
        self.check_alive("gcloud-tasks-emulator")

    def client(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        """Run ``bench/peer_client.py`` in the peer's venv against it; returns its JSON answer."""
        return grpc_client(self.python, self.port, *args, timeout=timeout)


def grpc_client(python: Path, port: int, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``bench/peer_client.py`` (the official client on gRPC) with ``python`` against ``port``.

    It speaks to any gRPC Cloud Tasks on 127.0.0.1: the peer, or the runner (REST and gRPC share its port).
    """
    command = [str(python), str(BENCH / "peer_client.py"), "--port", str(port), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"gRPC client failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- wrk -------------------------------------------------------------------------------------------


def have_wrk(figures: Figures) -> bool:
    """Whether wrk is on PATH; notes how to install it if not."""
    if shutil.which("wrk"):
        return True
    figures.note("wrk not found: its figures are skipped (Debian/Ubuntu: sudo apt-get install -y wrk)")
    return False


_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_WRK_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    """One wrk run (1 thread); returns requests/s, requests and non-2xx answers."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rate, total = _WRK_RATE.search(out), _WRK_TOTAL.search(out)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    bad = _WRK_BAD.search(out)
    return {
        "rps": float(rate.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(bad.group(1)) if bad else 0,
    }
