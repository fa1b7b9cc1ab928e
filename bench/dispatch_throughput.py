"""Dispatch throughput: a backlog over 10 queues at 500/s each to an aiohttp sink and gunicorn, and the peer.

Usage: python bench/dispatch_throughput.py [--tasks 20000] [--queues 10] [--rate 500] [--concurrency 1000]
       [--runs 3] [--no-peer] [--no-flask] [--baseline CHECKOUT] [--open-files N] [--smoke]
Each run starts a fresh `runner serve` on a data directory whose queues already hold the backlog (written
through the runner's store before it starts, so only dispatch is timed), and counts tasks/s from the first
to the last delivery. Runner CPU per task is read from /proc over that same window, so start-up is left
out. Sides alternate within each run: runner -> sink, baseline -> sink, peer -> sink, runner -> Flask.
`--baseline` runs the runner of another checkout too (e.g. `git worktree add --detach DIR main`), for a
before/after ratio from one invocation; `--open-files` starts the runners under that `ulimit -n` and
counts failed attempts and store errors in their logs. A pure-Python 10M-iteration loop is timed first,
so figures from different machines can be compared. Writes bench/results/dispatch_throughput.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
from benchlib import CpuSampler, Figures, Gunicorn, Peer, Runner, Sink, median


@dataclass(frozen=True)
class Setup:
    """What every run dispatches, and how the runners are started."""

    tasks: int
    queues: int
    concurrency: int
    rate: float
    open_files: int | None


def spread(total: int, queues: int) -> dict[str, int]:
    return {f"q{i}": total // queues + (1 if i < total % queues else 0) for i in range(queues)}


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else float("nan")


def log_problems(log: str) -> tuple[int, int]:
    """Failed attempts (WARNING lines of attempts) and other errors (ERROR lines) in a runner's log."""
    lines = log.splitlines()
    failed = sum(1 for line in lines if " WARNING " in line and " attempt " in line)
    return failed, sum(1 for line in lines if " ERROR " in line)


def runner_to_sink(
    tmp: Path, sink: Sink, setup: Setup, name: str, checkout: Path = benchlib.ROOT
) -> dict[str, float]:
    sink.reset()
    data = tmp / name
    benchlib.populate(
        data,
        spread(setup.tasks, setup.queues),
        f"{sink.url}/task",
        rate=setup.rate,
        concurrency=setup.concurrency,
    )
    runner = Runner(tmp, data, checkout=checkout, open_files=setup.open_files).wait_ready()
    try:
        with CpuSampler(runner.pid) as sampler:
            sink.wait_count(setup.tasks, timeout=60)
        cpu = benchlib.process_cpu_seconds([runner.pid])
        rss, _ = runner.memory_kb()
    finally:
        runner.stop()
    times = sink.deliveries()["times"]
    failed, errors = log_problems(runner.output())
    return {
        "rate": rate(times),
        "delivered": len(times),
        "runner_cpu_s": cpu,
        "window_cpu_s": sampler.cpu_between(min(times), max(times)),
        "runner_rss_mb": rss / 1024,
        "failed_attempts": failed,
        "errors": errors,
    }


def runner_to_flask(tmp: Path, total: int, queues: int, run: int) -> dict[str, float]:
    data = tmp / f"flask-{run}"
    log = tmp / f"deliveries-{run}.log"
    port = benchlib.free_port()
    env = {"CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{port}", "BENCH_DELIVERY_LOG": str(log)}
    worker = Gunicorn(tmp, env)
    try:
        # 8 in flight per queue (80 in all): what two sync workers hold. With the default 1,000 per queue
        # the runner opens thousands of connections, the accept queue overflows and attempts are reset.
        benchlib.populate(data, spread(total, queues), f"{worker.url}/task", oidc=True, concurrency=8)
        runner = Runner(tmp, data, port=port).wait_ready()
        try:

            def arrived() -> int:
                return log.read_bytes().count(b"\n") if log.exists() else 0

            benchlib.wait_for(lambda: arrived() >= total or not runner.alive(), 120, "Flask deliveries")
            runner.check_alive("runner serve")
        finally:
            runner.stop()
    finally:
        worker.stop()
    times = [float(line) for line in log.read_text().split()]
    return {"rate": rate(times), "delivered": len(times)}


def peer_to_sink(tmp: Path, peer_python: Path, sink: Sink, total: int, queues: int) -> dict[str, float]:
    names = ",".join(spread(total, queues))
    peer = Peer(tmp, peer_python)
    try:
        peer.client("create-queues", "--queues", names, "--paused")
        sink.reset()
        target = f"{sink.url}/task"
        peer.client("enqueue", "--queues", names, "--count", str(total), "--threads", "8", "--target", target)
        early = sink.stats()["count"]
        peer.client("resume", "--queues", names)
        sink.wait_count(total, timeout=60)
    finally:
        peer.stop()
    times = sink.deliveries()["times"]
    return {"rate": rate(times), "delivered": len(times), "delivered_while_paused": early}


def main() -> None:
    p = benchlib.parser(__doc__, runs=3)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--queues", type=int, default=10)
    p.add_argument("--rate", type=float, default=500.0, help="maxDispatchesPerSecond of each queue")
    p.add_argument("--concurrency", type=int, default=1000, help="maxConcurrentDispatches of each queue")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-flask", action="store_true")
    p.add_argument("--baseline", help="another checkout whose runner runs too, alternating")
    p.add_argument("--open-files", type=int, help="start the runners under this `ulimit -n`")
    args = benchlib.parse(p, tasks=300, queues=2)
    figures = Figures("dispatch_throughput", args)
    loop = benchlib.python_loop_seconds()
    figures.add("python_loop_10m_s", "machine speed: pure-Python 10M-iteration loop", loop, "s")
    setup = Setup(args.tasks, args.queues, args.concurrency, args.rate, args.open_files)
    peer_python = None if args.no_peer else benchlib.peer_python()
    if peer_python is None and not args.no_peer:
        figures.note("peer could not be installed; peer figures skipped")
    sides: dict[str, list[dict[str, float]]] = {"sink": [], "baseline": [], "peer": [], "flask": []}
    with benchlib.workdir("dispatch") as tmp:
        sink = Sink(tmp)
        try:
            for run in range(args.runs):
                started = time.monotonic()
                sides["sink"].append(runner_to_sink(tmp, sink, setup, f"sink-{run}"))
                if args.baseline is not None:
                    baseline = runner_to_sink(
                        tmp, sink, setup, f"baseline-{run}", Path(args.baseline).resolve()
                    )
                    sides["baseline"].append(baseline)
                if peer_python is not None:
                    sides["peer"].append(peer_to_sink(tmp, peer_python, sink, args.tasks, args.queues))
                if not args.no_flask:
                    sides["flask"].append(runner_to_flask(tmp, args.tasks, args.queues, run))
                summary = ", ".join(f"{k} {v[-1]['rate']:.0f}/s" for k, v in sides.items() if v)
                took = time.monotonic() - started
                print(f"run {run + 1}/{args.runs} ({took:.0f} s): {summary}", flush=True)
        finally:
            sink.stop()
    n, q, r = args.tasks, args.queues, f"{args.rate:g}"
    c = args.concurrency
    limit = f", ulimit -n {args.open_files}" if args.open_files else ""
    labels = {
        "sink": f"runner -> aiohttp sink, {n} tasks over {q} queues at {r}/s, {c} concurrent each{limit}",
        "baseline": f"baseline runner ({args.baseline}) -> aiohttp sink, same backlog",
        "peer": f"gcloud-tasks-emulator -> aiohttp sink, {n} tasks over {q} queues",
        "flask": "runner -> gunicorn 2 sync workers, @task_handler (OIDC + memory dedup), 8 in flight/queue",
    }
    medians = {}
    for side, runs in sides.items():
        if runs:
            rates = [r["rate"] for r in runs]
            medians[side] = figures.add(f"{side}_tasks_per_s", labels[side], median(rates), "tasks/s", rates)
            lost = [r["delivered"] - n for r in runs if r["delivered"] != n]
            if lost:
                figures.note(f"{side}: delivered count differed from {n} by {lost}")
    for side, who in (("sink", "runner"), ("baseline", "baseline")):
        if side not in medians:
            continue
        runs = sides[side]
        cpu = [r["runner_cpu_s"] / n * 1e6 for r in runs]
        figures.add(
            f"{who}_cpu_us_per_task", f"{who} CPU per dispatched task, whole process", median(cpu), "us", cpu
        )
        window = [r["window_cpu_s"] / n * 1e6 for r in runs]
        label = f"{who} CPU per dispatched task, first to last delivery"
        figures.add(f"{who}_window_cpu_us_per_task", label, median(window), "us", window)
        failed = [r["failed_attempts"] for r in runs]
        figures.add(f"{who}_failed_attempts", f"{who}: failed attempts (all runs)", sum(failed), "", failed)
        errors = [r["errors"] for r in runs]
        figures.add(
            f"{who}_errors", f"{who}: ERROR log lines, e.g. store errors (all runs)", sum(errors), "", errors
        )
    if "baseline" in medians:
        ratios = [a["rate"] / b["rate"] for a, b in zip(sides["sink"], sides["baseline"], strict=True)]
        figures.add("ratio_vs_baseline", "runner / baseline on the aiohttp sink", median(ratios), "x", ratios)
        pairs = zip(sides["sink"], sides["baseline"], strict=True)
        cpu_ratios = [a["window_cpu_s"] / b["window_cpu_s"] for a, b in pairs]
        label = "runner / baseline CPU per dispatched task, first to last delivery, pair by pair"
        figures.add("cpu_ratio_vs_baseline", label, median(cpu_ratios), "x", cpu_ratios)
    if "peer" in medians:
        ratios = [a["rate"] / b["rate"] for a, b in zip(sides["sink"], sides["peer"], strict=True)]
        figures.add("ratio_vs_peer", "runner / peer on the aiohttp sink", median(ratios), "x", ratios)
    figures.save()


if __name__ == "__main__":
    main()
