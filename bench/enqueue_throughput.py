"""Enqueue throughput: CreateTask/s into the runner over REST and gRPC, and into the peer over gRPC.

Usage: python bench/enqueue_throughput.py [--tasks 4000] [--runs 3] [--no-peer] [--baseline CHECKOUT]
       [--smoke]
       python bench/enqueue_throughput.py --grpc-ceilings [--baseline CHECKOUT] [--tasks 4000] [--runs 3]
The queue is paused so only acceptance is timed. Runner side: one keep-alive http.client connection per
thread, then tasktoolkit's TasksClient.enqueue_many(max_workers=8), then wrk with 8 connections (a C
client: the server's own ceiling), then the official client on gRPC (bench/peer_client.py, one channel
per thread, 1 and 8 threads) on the same port, after which every gRPC task is counted back through
ListTasks. Peer side: the same gRPC client program, run by the same interpreter, 1 and 8 threads.
The runner's CPU per CreateTask (from /proc) is reported for the wrk run and the 8-thread gRPC run.
`--baseline` also runs the runner of another checkout (e.g. `git worktree add --detach DIR main`) under
wrk in each run, for a before/after ratio of the CPU per CreateTask from one invocation.
Sides alternate within each run. Prints one figure per line and writes bench/results/enqueue_throughput.json.

``--grpc-ceilings`` measures gRPC CreateTask only, alternating within each run: the peer and the runner
from the official client (1 and 8 threads) and from a faster client (one ``grpc.aio`` channel, 64 calls
in flight), and null gRPC servers (grpcio's threaded one, ``grpc.aio``, and one on gRPC's core with one
Python thread, the runner's kind of server) that answer with a fixed Task and store nothing (what each
client reaches at all here). ``--baseline`` adds a runner from another
checkout (a worktree of an older commit) under the same loads. Every task a runner acknowledged is
counted back through ListTasks. Each runner then takes wrk's REST CreateTasks (when wrk is there), for
its CPU per gRPC call against its CPU per REST call in the same process.
Writes bench/results/enqueue_grpc_ceilings.json.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
import requests
from benchlib import BENCH, Figures, Peer, Runner, median

QUEUE = "enqueue"
GRPC_QUEUE = "enqueue-grpc"
TARGET = "http://127.0.0.1:9/task"


def rest_threads(url: str, count: int, threads: int) -> float:
    """CreateTask/s from ``threads`` threads, one keep-alive ``http.client`` connection each.

    The standard library's client costs a fraction of ``requests`` per call, so more of the two cores
    is left to the server being measured (``enqueue_many`` below measures TasksClient against it).
    """
    path = f"/v2/{benchlib.queue_name(QUEUE)}/tasks"
    host = url.removeprefix("http://")
    headers = {"Content-Type": "application/json"}
    local = threading.local()

    def create(i: int) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(host, timeout=30)
        local.connection.request("POST", path, json.dumps(benchlib.task_json(TARGET, i)), headers)
        response = local.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"CreateTask answered {response.status}: {answer[:200]!r}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(threads)))  # open the connections first
        started = time.perf_counter()
        if threads == 1:
            for i in range(threads, count + threads):
                create(i)
        else:
            list(pool.map(create, range(threads, count + threads)))
        return count / (time.perf_counter() - started)


def enqueue_many(url: str, count: int) -> float:
    from tasktoolkit.client import TasksClient

    with TasksClient(benchlib.PROJECT, benchlib.LOCATION, endpoint=url) as client:
        client.enqueue_many(QUEUE, [{"url": TARGET, "json": {"n": -1}}], max_workers=8)
        tasks = [{"url": TARGET, "json": {"n": i, "kind": "bench"}} for i in range(count)]
        started = time.perf_counter()
        results = client.enqueue_many(QUEUE, tasks, max_workers=8)
        elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"enqueue_many: {len(failed)} of {count} failed, e.g. {failed[0]}")
    return count / elapsed


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = %s
"""


def wrk_rate(url: str, tmp: Path, seconds: int, pid: int) -> tuple[float, float]:
    """CreateTask/s from wrk with 8 connections, and the runner's CPU µs per CreateTask meanwhile."""
    script = tmp / "create_task.lua"
    body = json.dumps(benchlib.task_json(TARGET, 0))
    script.write_text(WRK_SCRIPT % json.dumps(body))
    endpoint = f"{url}/v2/{benchlib.queue_name(QUEUE)}/tasks"
    before = benchlib.process_cpu_seconds([pid])
    result = benchlib.wrk(endpoint, script, connections=8, seconds=seconds)
    cpu = benchlib.process_cpu_seconds([pid]) - before
    return result["rps"], cpu / max(1, result["requests"]) * 1e6


def grpc_rate(
    python: Path, port: int, count: int, threads: int, pid: int | None = None
) -> tuple[float, float]:
    """CreateTask/s from the official client on gRPC with ``threads`` threads, one channel each.

    The second figure is the server's CPU µs per CreateTask meanwhile, with its ``pid`` (NaN without).
    """
    before = benchlib.process_cpu_seconds([pid]) if pid else 0.0
    answer = benchlib.grpc_client(
        python, port, "enqueue", "--queues", GRPC_QUEUE, "--count", str(count), "--threads", str(threads),
        "--target", TARGET,
    )  # fmt: skip
    cpu = (benchlib.process_cpu_seconds([pid]) - before) / count * 1e6 if pid else float("nan")
    return answer["timed"] / answer["seconds"], cpu


def grpc_rates(python: Path, port: int, count: int, pid: int | None = None) -> dict[str, float]:
    """CreateTask/s over gRPC from 1 and 8 threads (``count // 2`` and ``count`` tasks).

    With the server's ``pid``, also its CPU µs per CreateTask over the 8-thread run (``grpc_cpu_us``).
    """
    one, _ = grpc_rate(python, port, count // 2, 1)
    eight, cpu = grpc_rate(python, port, count, 8, pid)
    out = {"grpc_1_thread": one, "grpc_8_threads": eight}
    if pid:
        out["grpc_cpu_us"] = cpu
    return out


def count_tasks(session: requests.Session, url: str, queue_id: str) -> int:
    """Tasks stored in a queue, counted through ListTasks pages."""
    total, token = 0, ""
    while True:
        page = session.get(
            f"{url}/v2/{benchlib.queue_name(queue_id)}/tasks",
            params={"pageSize": 1000, "pageToken": token},
            timeout=60,
        ).json()
        total += len(page.get("tasks", []))
        token = page.get("nextPageToken", "")
        if not token:
            return total


def check_stored(runner: Runner, acknowledged: int) -> None:
    """Fail unless every task acknowledged over gRPC is stored (counted through ListTasks)."""
    stored = count_tasks(requests.Session(), runner.url, GRPC_QUEUE)
    if stored != acknowledged:
        raise RuntimeError(f"gRPC: {acknowledged} tasks acknowledged, {stored} stored")
    runner.check_alive("runner serve")


def runner_side(
    tmp: Path, args: object, run: int, use_client: bool, use_wrk: bool, grpc_python: Path
) -> dict[str, float]:
    count = args.tasks  # type: ignore[attr-defined]
    data = tmp / f"data-{run}"
    runner = Runner(tmp, data).wait_ready()
    try:
        session = requests.Session()
        benchlib.create_queue(session, runner.url, QUEUE, paused=True)
        out = {
            "rest_1_thread": rest_threads(runner.url, count // 2, 1),
            "rest_8_threads": rest_threads(runner.url, count, 8),
        }
        if use_client:
            out["enqueue_many_8"] = enqueue_many(runner.url, count)
        if use_wrk:
            seconds = args.wrk_seconds  # type: ignore[attr-defined]
            out["wrk_8_connections"], out["wrk_cpu_us"] = wrk_rate(runner.url, tmp, seconds, runner.pid)
        port = int(runner.url.rpartition(":")[2])
        benchlib.grpc_client(grpc_python, port, "create-queues", "--queues", GRPC_QUEUE, "--paused")
        out.update(grpc_rates(grpc_python, port, count, runner.pid))
        check_stored(runner, count // 2 + count)
    finally:
        runner.stop()
        shutil.rmtree(data, ignore_errors=True)
    return out


def baseline_side(tmp: Path, checkout: Path, seconds: int, run: int) -> dict[str, float]:
    """wrk against the runner of ``checkout``: its CreateTask/s and CPU per CreateTask."""
    data = tmp / f"baseline-{run}"
    runner = Runner(tmp, data, checkout=checkout).wait_ready()
    try:
        benchlib.create_queue(requests.Session(), runner.url, QUEUE, paused=True)
        rate, cpu = wrk_rate(runner.url, tmp, seconds, runner.pid)
        runner.check_alive("baseline runner serve")
    finally:
        runner.stop()
        shutil.rmtree(data, ignore_errors=True)
    return {"baseline_wrk_8_connections": rate, "baseline_wrk_cpu_us": cpu}


def peer_side(tmp: Path, python: Path, count: int) -> dict[str, float]:
    peer = Peer(tmp, python)
    try:
        peer.client("create-queues", "--queues", GRPC_QUEUE, "--paused")
        rates = grpc_rates(python, peer.port, count)
    finally:
        peer.stop()
    return {"peer_1_thread": rates["grpc_1_thread"], "peer_8_threads": rates["grpc_8_threads"]}


LABELS = {
    "rest_1_thread": "runner CreateTask, REST, 1 thread (http.client keep-alive)",
    "rest_8_threads": "runner CreateTask, REST, 8 threads (http.client keep-alive each)",
    "enqueue_many_8": "runner CreateTask via TasksClient.enqueue_many(max_workers=8)",
    "wrk_8_connections": "runner CreateTask, REST, wrk 8 connections (server ceiling)",
    "grpc_1_thread": "runner CreateTask, gRPC (official client), 1 thread",
    "grpc_8_threads": "runner CreateTask, gRPC (official client), 8 threads",
    "wrk_cpu_us": "runner CPU per CreateTask, REST, under wrk (8 connections)",
    "grpc_cpu_us": "runner CPU per CreateTask, gRPC, 8 client threads",
    "baseline_wrk_8_connections": "baseline runner CreateTask, REST, wrk 8 connections",
    "baseline_wrk_cpu_us": "baseline runner CPU per CreateTask, REST, under wrk (8 connections)",
    "peer_1_thread": "gcloud-tasks-emulator CreateTask, gRPC, 1 thread",
    "peer_8_threads": "gcloud-tasks-emulator CreateTask, gRPC, 8 threads",
}
RATIOS = {
    "ratio_1_thread": ("rest_1_thread", "peer_1_thread", "runner / peer, 1 client thread"),
    "ratio_8_threads": ("rest_8_threads", "peer_8_threads", "runner / peer, 8 client threads"),
    "ratio_best": ("wrk_8_connections", "peer_8_threads", "runner (wrk, 8 conns) / peer (8 threads)"),
    "grpc_ratio_1_thread": ("grpc_1_thread", "peer_1_thread", "runner / peer, both gRPC, 1 client thread"),
    "grpc_ratio_8_threads": (
        "grpc_8_threads",
        "peer_8_threads",
        "runner / peer, both gRPC, 8 client threads",
    ),
    "wrk_cpu_vs_baseline": ("wrk_cpu_us", "baseline_wrk_cpu_us", "runner / baseline, CPU per CreateTask"),
    "enqueue_many_vs_raw": ("enqueue_many_8", "rest_8_threads", "enqueue_many(8) / raw REST, 8 threads"),
}


AIO_CONCURRENCY = 64


def grpc_aio_rate(python: Path, port: int, count: int) -> float:
    """CreateTask/s from one ``grpc.aio`` channel with ``AIO_CONCURRENCY`` calls in flight."""
    answer = benchlib.grpc_client(
        python, port, "enqueue-aio", "--queues", GRPC_QUEUE, "--count", str(count),
        "--concurrency", str(AIO_CONCURRENCY), "--target", TARGET,
    )  # fmt: skip
    return float(answer["timed"] / answer["seconds"])


def grpc_side(python: Path, port: int, count: int, name: str, pid: int | None = None) -> dict[str, float]:
    """One server's gRPC figures: the official client with 1 and 8 threads, then the faster client.

    Creates the paused queue first; with the server's ``pid``, also its CPU µs per call (8 threads).
    """
    benchlib.grpc_client(python, port, "create-queues", "--queues", GRPC_QUEUE, "--paused")
    out = {f"{name}_1_thread": grpc_rate(python, port, count // 2, 1)[0]}
    out[f"{name}_8_threads"], cpu = grpc_rate(python, port, count, 8, pid)
    if pid:
        out[f"{name}_cpu_us"] = cpu
    out[f"{name}_aio"] = grpc_aio_rate(python, port, count)
    return out


def runner_grpc(
    tmp: Path, name: str, python: Path, count: int, wrk_seconds: int, checkout: Path = benchlib.ROOT
) -> dict[str, float]:
    """A runner's :func:`grpc_side` figures; every task acknowledged is then counted back.

    With ``wrk_seconds``, the same runner's CPU per REST CreateTask under wrk too (``{name}_rest_cpu_us``).
    """
    data = tmp / f"data-{name}"
    runner = Runner(tmp, data, checkout=checkout).wait_ready()
    try:
        out = grpc_side(python, int(runner.url.rpartition(":")[2]), count, name, runner.pid)
        check_stored(runner, count // 2 + 2 * count)
        if wrk_seconds:
            benchlib.create_queue(requests.Session(), runner.url, QUEUE, paused=True)
            out[f"{name}_rest_cpu_us"] = wrk_rate(runner.url, tmp, wrk_seconds, runner.pid)[1]
    finally:
        runner.stop()
        shutil.rmtree(data, ignore_errors=True)
    return out


@contextlib.contextmanager
def null_server(tmp: Path, python: Path, kind: str) -> Iterator[int]:
    """``peer_client.py serve-null --server KIND`` on a free port; yields the port."""
    port = benchlib.free_port()
    command = [
        str(python),
        str(BENCH / "peer_client.py"),
        "--port",
        str(port),
        "serve-null",
        "--server",
        kind,
    ]
    child = benchlib.Child(command, tmp / f"null-server-{kind}.log")
    try:
        benchlib.wait_for(lambda: benchlib.port_open(port) or not child.alive(), 60, "the null server")
        child.check_alive("null gRPC server")
        yield port
    finally:
        child.stop()


_AIO = f"one grpc.aio channel, {AIO_CONCURRENCY} calls in flight"
_CORE_NULL = "null server on gRPC's core, one Python thread (the runner's kind)"
CEILING_LABELS = {
    "peer_1_thread": LABELS["peer_1_thread"],
    "peer_8_threads": LABELS["peer_8_threads"],
    "peer_aio": f"gcloud-tasks-emulator CreateTask, gRPC, {_AIO}",
    "runner_1_thread": LABELS["grpc_1_thread"],
    "runner_8_threads": LABELS["grpc_8_threads"],
    "runner_aio": f"runner CreateTask, gRPC, {_AIO}",
    "runner_cpu_us": LABELS["grpc_cpu_us"],
    "runner_rest_cpu_us": LABELS["wrk_cpu_us"],
    "baseline_1_thread": "baseline " + LABELS["grpc_1_thread"],
    "baseline_8_threads": "baseline " + LABELS["grpc_8_threads"],
    "baseline_aio": f"baseline runner CreateTask, gRPC, {_AIO}",
    "baseline_cpu_us": "baseline " + LABELS["grpc_cpu_us"],
    "baseline_rest_cpu_us": "baseline " + LABELS["wrk_cpu_us"],
    "null_8_threads": "null gRPC server (threaded, fixed answer, no storage), official client, 8 threads",
    "null_aio": f"null gRPC server (threaded, fixed answer, no storage), {_AIO}",
    "aio_null_8_threads": "null grpc.aio server (fixed answer, no storage), official client, 8 threads",
    "core_null_8_threads": f"{_CORE_NULL}, official client, 8 threads",
    "core_null_aio": f"{_CORE_NULL}, {_AIO}",
}
CEILING_RATIOS = {
    "runner_vs_peer_1_thread": (
        "runner_1_thread",
        "peer_1_thread",
        "runner / peer, official client, 1 thread",
    ),
    "runner_vs_peer": ("runner_8_threads", "peer_8_threads", "runner / peer, official client, 8 threads"),
    "null_vs_peer": ("null_8_threads", "peer_8_threads", "null server / peer, official client, 8 threads"),
    "null_aio_vs_peer_aio": ("null_aio", "peer_aio", "null server / peer, grpc.aio client"),
    "runner_vs_null": ("runner_8_threads", "null_8_threads", "runner / threaded null server, 8 threads"),
    "runner_aio_vs_null_aio": ("runner_aio", "null_aio", "runner / threaded null server, grpc.aio client"),
    "runner_vs_core_null": ("runner_8_threads", "core_null_8_threads", "runner / core null, 8 threads"),
    "runner_aio_vs_core_null_aio": ("runner_aio", "core_null_aio", "runner / core null, grpc.aio client"),
    "runner_aio_vs_peer_aio": ("runner_aio", "peer_aio", "runner / peer, grpc.aio client"),
    "runner_vs_baseline_1_thread": ("runner_1_thread", "baseline_1_thread", "runner / baseline, 1 thread"),
    "runner_vs_baseline": ("runner_8_threads", "baseline_8_threads", "runner / baseline, 8 threads"),
    "runner_vs_baseline_aio": ("runner_aio", "baseline_aio", "runner / baseline, grpc.aio client"),
    "cpu_vs_baseline": ("runner_cpu_us", "baseline_cpu_us", "runner CPU per call / baseline, 8 threads"),
    "grpc_vs_rest_cpu": ("runner_cpu_us", "runner_rest_cpu_us", "runner CPU per call, gRPC / REST (wrk)"),
    "baseline_grpc_vs_rest_cpu": (
        "baseline_cpu_us",
        "baseline_rest_cpu_us",
        "baseline CPU per call, gRPC / REST (wrk)",
    ),
}


def grpc_ceilings(args: object, python: Path) -> None:
    """The ``--grpc-ceilings`` mode (see the module's docstring)."""
    figures = Figures("enqueue_grpc_ceilings", args)  # type: ignore[arg-type]
    count = args.tasks  # type: ignore[attr-defined]
    baseline = Path(args.baseline) if args.baseline else None  # type: ignore[attr-defined]
    figures.note(f"pure-Python 10M-iteration loop (benchlib): {benchlib.python_loop_seconds():.3f} s")
    wrk_seconds = args.wrk_seconds if benchlib.have_wrk(figures) else 0  # type: ignore[attr-defined]
    runs: dict[str, list[float]] = {key: [] for key in CEILING_LABELS}
    with benchlib.workdir("enqueue-grpc") as tmp:
        for run in range(args.runs):  # type: ignore[attr-defined]
            peer = Peer(tmp, python)
            try:
                figures_of_run = grpc_side(python, peer.port, count, "peer")
            finally:
                peer.stop()
            figures_of_run |= runner_grpc(tmp, "runner", python, count, wrk_seconds)
            if baseline is not None:
                figures_of_run |= runner_grpc(tmp, "baseline", python, count, wrk_seconds, baseline)
            with null_server(tmp, python, "threads") as port:
                figures_of_run["null_8_threads"] = grpc_rate(python, port, count, 8)[0]
                figures_of_run["null_aio"] = grpc_aio_rate(python, port, count)
            with null_server(tmp, python, "aio") as port:
                figures_of_run["aio_null_8_threads"] = grpc_rate(python, port, count, 8)[0]
            with null_server(tmp, python, "core") as port:
                figures_of_run["core_null_8_threads"] = grpc_rate(python, port, count, 8)[0]
                figures_of_run["core_null_aio"] = grpc_aio_rate(python, port, count)
            for key, value in figures_of_run.items():
                runs[key].append(value)
            print(
                f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items() if v), flush=True
            )
    report(figures, runs, CEILING_LABELS, CEILING_RATIOS)


def report(
    figures: Figures,
    runs: dict[str, list[float]],
    labels: dict[str, str],
    ratios: dict[str, tuple[str, str, str]],
) -> None:
    """Each figure's median over the runs, then each ratio's median over the runs' pairs; saved."""
    for key, label in labels.items():
        if runs[key]:
            unit = "us" if key.endswith("_cpu_us") else "tasks/s"
            figures.add(key, label, median(runs[key]), unit, runs[key])
    for key, (ours, theirs, label) in ratios.items():
        if runs[ours] and runs[theirs]:
            pairs = [a / b for a, b in zip(runs[ours], runs[theirs], strict=True)]
            figures.add(key, label, median(pairs), "x", pairs)
    figures.save()


def main() -> None:
    p = benchlib.parser(__doc__, runs=3)
    p.add_argument("--tasks", type=int, default=4000, help="tasks per multi-threaded measurement")
    p.add_argument("--wrk-seconds", type=int, default=3)
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--grpc-ceilings", action="store_true", help="gRPC CreateTask ceilings only (see above)")
    p.add_argument("--baseline", help="another checkout's runner, alternating (under wrk, or the ceilings)")
    args = benchlib.parse(p, tasks=40, wrk_seconds=1)
    if args.grpc_ceilings:
        peer_python = benchlib.peer_python()
        if peer_python is None:
            raise SystemExit("--grpc-ceilings needs the peer (gcloud-tasks-emulator)")
        grpc_ceilings(args, peer_python)
        return
    figures = Figures("enqueue_throughput", args)
    try:
        import tasktoolkit.client  # noqa: F401

        use_client = True
    except ImportError:
        use_client = False
        figures.note("tasktoolkit.client is not there yet; enqueue_many skipped")
    use_wrk = benchlib.have_wrk(figures)
    python = None if args.no_peer else benchlib.peer_python()
    # One gRPC client program for both sides, run by the same interpreter (the peer's when it is there).
    grpc_python = python or Path(sys.executable)
    runs: dict[str, list[float]] = {key: [] for key in LABELS}
    with benchlib.workdir("enqueue") as tmp:
        for run in range(args.runs):
            for key, value in runner_side(tmp, args, run, use_client, use_wrk, grpc_python).items():
                runs[key].append(value)
            if args.baseline is not None and use_wrk:
                baseline = Path(args.baseline).resolve()
                for key, value in baseline_side(tmp, baseline, args.wrk_seconds, run).items():
                    runs[key].append(value)
            if python is not None:
                for key, value in peer_side(tmp, python, args.tasks).items():
                    runs[key].append(value)
            print(
                f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items() if v)
            )
    report(figures, runs, LABELS, RATIOS)


if __name__ == "__main__":
    main()
