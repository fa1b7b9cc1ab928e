"""Schedule lateness: tasks with schedule times spread over 10 s; p50/p99/max of delivery minus schedule time.

Usage: python bench/schedule_lateness.py [--tasks 2000] [--spread 10] [--runs 3] [--smoke]
Tasks are created through the REST API (8 threads) into one queue at the default 500/s with schedule times
spread evenly over the spread, starting after creation has finished; the sink records each arrival and
its X-CloudTasks-TaskETA. Prints one figure per line and writes bench/results/schedule_lateness.json.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
import requests
from benchlib import Figures, Runner, Sink, median, percentile

QUEUE = "later"


def one_run(tmp: Path, sink: Sink, count: int, spread: float, run: int) -> list[float]:
    sink.reset()
    runner = Runner(tmp, tmp / f"data-{run}").wait_ready()
    try:
        benchlib.create_queue(requests.Session(), runner.url, QUEUE)
        endpoint = f"{runner.url}/v2/{benchlib.queue_name(QUEUE)}/tasks"
        first = time.time() + 1.0 + count / 1000  # after creation (well above 1,000 creates/s) is done
        local = threading.local()

        def create(i: int) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            when = benchlib.rfc3339(first + spread * i / count)
            body = benchlib.task_json(f"{sink.url}/task", i, schedule_time=when)
            local.session.post(endpoint, json=body, timeout=30).raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(count)))
        if time.time() > first:
            raise RuntimeError("creating the tasks took longer than planned; lower --tasks")
        sink.wait_count(count, timeout=spread + 30)
        runner.check_alive("runner serve")
    finally:
        runner.stop()
    deliveries = sink.deliveries()
    return [(t - eta) * 1000 for t, eta in zip(deliveries["times"], deliveries["etas"], strict=True)]


def main() -> None:
    p = benchlib.parser(__doc__, runs=3)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--spread", type=float, default=10.0, help="seconds the schedule times span")
    args = benchlib.parse(p, tasks=50, spread=0.5)
    figures = Figures("schedule_lateness", args)
    stats: dict[str, list[float]] = {"p50": [], "p99": [], "max": [], "early": []}
    with benchlib.workdir("lateness") as tmp:
        sink = Sink(tmp)
        try:
            for run in range(args.runs):
                late = one_run(tmp, sink, args.tasks, args.spread, run)
                stats["p50"].append(percentile(late, 50))
                stats["p99"].append(percentile(late, 99))
                stats["max"].append(max(late))
                stats["early"].append(sum(1 for x in late if x < 0))
                last = ", ".join(f"{key} {stats[key][-1]:.2f} ms" for key in ("p50", "p99", "max"))
                print(f"run {run + 1}/{args.runs}: {last}", flush=True)
        finally:
            sink.stop()
    n = f"{args.tasks} tasks over {args.spread:g} s"
    for key in ("p50", "p99", "max"):
        figures.add(f"lateness_{key}_ms", f"lateness {key}, {n}", median(stats[key]), "ms", stats[key])
    figures.add("delivered_early", "tasks delivered before their schedule time", max(stats["early"]), "tasks")
    figures.save()


if __name__ == "__main__":
    main()
