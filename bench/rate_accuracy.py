"""Rate and burst accuracy: queues at 5/s, 50/s and 500/s with a 5,000-task backlog each, delivered to a sink.

Usage: python bench/rate_accuracy.py [--rates 5,50,500] [--backlog 5000] [--window 20] [--runs 2] [--smoke]
The three queues run side by side in one `runner serve` whose store holds the backlog before it starts.
Per queue: the achieved rate over the steady window (arrivals at the sink from 1 s after the first one to
the end of the window, or to the last task if the backlog runs out first) against the configured rate, and
the initial burst: how many tasks the runner dispatched before its bucket could have earned another token
(within half a token's interval of the first dispatch, and at least 5 ms, read from the attempt history in
its store).
Prints one figure per line and writes bench/results/rate_accuracy.json.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import benchlib
from benchlib import Figures, Runner, Sink, median

SETTLE = 1.0
#: Shortest window, in seconds, in which the initial burst is counted.
BURST_WINDOW = 0.005


def steady_rate(times: list[float], window: float) -> float:
    """Deliveries per second between the first and last delivery of the steady window."""
    start = min(times)
    steady = sorted(t for t in times if start + SETTLE < t <= start + window)
    if len(steady) < 2:
        return float("nan")
    return (len(steady) - 1) / (steady[-1] - steady[0])


def first_claims(data: Path, rates: dict[str, float]) -> dict[str, int]:
    """Per queue id: tasks dispatched within ``max(0.5 / rate, 5 ms)`` of the queue's first dispatch.

    The burst takes two claims about a millisecond apart (the first claim of a queue learns where its tasks
    go), so the window is not one instant; at 500/s the bucket earns at most two tokens in 5 ms.
    """
    from local_runner.store import DB_FILENAME

    with sqlite3.connect(data / DB_FILENAME) as conn:
        rows = conn.execute("SELECT task_name, dispatch_time FROM attempts").fetchall()
    first: dict[str, list[float]] = {}
    for name, dispatched in rows:
        first.setdefault(name.split("/")[5], []).append(dispatched)
    return {
        queue: sum(1 for t in times if t <= min(times) + max(0.5 / rates[queue], BURST_WINDOW))
        for queue, times in first.items()
        if queue in rates
    }


def one_run(tmp: Path, sink: Sink, rates: list[float], backlog: int, window: float, run: int) -> dict:
    from local_runner.model import derive_burst_size

    sink.reset()
    data = tmp / f"data-{run}"
    for rate in rates:
        benchlib.populate(data, {f"r{rate:g}": backlog}, f"{sink.url}/task", rate=rate)
    runner = Runner(tmp, data).wait_ready()
    try:
        benchlib.wait_for(lambda: sink.stats()["count"] > 0, 30, "the first delivery")
        time.sleep(window + 0.5)
    finally:
        runner.stop()
    deliveries = sink.deliveries()
    bursts = first_claims(data, {f"r{rate:g}": rate for rate in rates})
    out = {}
    for rate in rates:
        queue = f"r{rate:g}"
        times = [t for t, q in zip(deliveries["times"], deliveries["queues"], strict=True) if q == queue]
        out[queue] = {
            "rate": steady_rate(times, window),
            "burst": bursts.get(queue, 0),
            "expected_burst": derive_burst_size(rate),
        }
    return out


def main() -> None:
    p = benchlib.parser(__doc__, runs=2)
    p.add_argument("--rates", default="5,50,500")
    p.add_argument("--backlog", type=int, default=5000)
    p.add_argument("--window", type=float, default=20.0, help="seconds measured per run")
    args = benchlib.parse(p, backlog=200, window=2.0)
    rates = [float(r) for r in args.rates.split(",")]
    figures = Figures("rate_accuracy", args)
    results: list[dict] = []
    with benchlib.workdir("rate") as tmp:
        sink = Sink(tmp)
        try:
            for run in range(args.runs):
                results.append(one_run(tmp, sink, rates, args.backlog, args.window, run))
                print(f"run {run + 1}/{args.runs}: {results[-1]}", flush=True)
        finally:
            sink.stop()
    for rate in rates:
        queue = f"r{rate:g}"
        achieved = [r[queue]["rate"] for r in results]
        errors = [(a / rate - 1) * 100 for a in achieved]
        bursts = [r[queue]["burst"] for r in results]
        figures.add(f"{queue}_rate", f"queue at {rate:g}/s: achieved rate", median(achieved), "/s", achieved)
        figures.add(f"{queue}_error_pct", f"queue at {rate:g}/s: rate error", median(errors), "%", errors)
        expected = results[0][queue]["expected_burst"]
        figures.add(
            f"{queue}_burst",
            f"queue at {rate:g}/s: initial burst (max_burst_size {expected})",
            median(bursts),
            "tasks",
            bursts,
        )
    figures.save()


if __name__ == "__main__":
    main()
