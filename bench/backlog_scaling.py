"""Backlog scaling: dispatch rate and runner RSS with 10k, 100k and 1M tasks queued.

Usage: python bench/backlog_scaling.py [--sizes 10000,100000,1000000] [--measure 5000] [--runs 2] [--smoke]
Each backlog is written once into a template data directory through the runner's own store (bulk
transactions; CreateTask would take minutes for a million tasks), spread over 10 queues at 500/s, and
copied for every run. A fresh `runner serve` then dispatches to the aiohttp sink; the rate is taken over
--measure deliveries after the initial burst (10 queues x max_burst_size), RSS (VmRSS and peak VmHWM)
right after them. Sizes alternate within each
run. Prints one figure per line and writes bench/results/backlog_scaling.json.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import benchlib
from benchlib import Figures, Runner, Sink, median

from local_runner.model import derive_burst_size

QUEUES = 10


def one_run(tmp: Path, template: Path, sink: Sink, skip: int, measure: int) -> dict[str, float]:
    sink.reset()
    data = tmp / "run"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data)
    started = time.monotonic()
    runner = Runner(tmp, data).wait_ready(timeout=120)
    try:
        ready = time.monotonic() - started
        sink.wait_count(skip + measure, timeout=60)
        rss, hwm = runner.memory_kb()
    finally:
        runner.stop()
    times = sorted(sink.deliveries()["times"])[skip : skip + measure]
    shutil.rmtree(data, ignore_errors=True)
    return {
        "rate": (len(times) - 1) / (times[-1] - times[0]),
        "rss_mb": rss / 1024,
        "hwm_mb": hwm / 1024,
        "start_s": ready,
    }


def main() -> None:
    p = benchlib.parser(__doc__, runs=2)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--measure", type=int, default=8000, help="deliveries timed per run, after the burst")
    args = benchlib.parse(p, sizes="200,1000", measure=100)
    skip = QUEUES * derive_burst_size(benchlib.RATE)  # the initial burst runs faster than the rate
    sizes = [int(s) for s in args.sizes.split(",")]
    figures = Figures("backlog_scaling", args)
    results: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    with benchlib.workdir("backlog") as tmp:
        sink = Sink(tmp)
        try:
            templates = {}
            for size in sizes:
                templates[size] = tmp / f"template-{size}"
                per_queue = {f"q{i}": size // QUEUES for i in range(QUEUES)}
                took = benchlib.populate(templates[size], per_queue, f"{sink.url}/task")
                print(f"wrote {size} tasks into the store in {took:.1f} s", flush=True)
            for run in range(args.runs):
                for size in sizes:
                    measure = min(args.measure, size - skip) if size > skip else size
                    results[size].append(
                        one_run(tmp, templates[size], sink, skip if size > skip else 0, measure)
                    )
                    r = results[size][-1]
                    print(
                        f"run {run + 1}/{args.runs}, {size} queued: {r['rate']:.0f} tasks/s, "
                        f"RSS {r['rss_mb']:.0f} MB, ready in {r['start_s']:.1f} s",
                        flush=True,
                    )
        finally:
            sink.stop()
    for size in sizes:
        rates = [r["rate"] for r in results[size]]
        rss = [r["rss_mb"] for r in results[size]]
        hwm = [r["hwm_mb"] for r in results[size]]
        ready = [r["start_s"] for r in results[size]]
        figures.add(f"rate_{size}", f"dispatch rate with {size:,} queued", median(rates), "tasks/s", rates)
        figures.add(f"rss_{size}", f"runner RSS with {size:,} queued", median(rss), "MB", rss)
        figures.add(f"peak_rss_{size}", f"runner peak RSS with {size:,} queued", median(hwm), "MB", hwm)
        figures.add(f"ready_{size}", f"runner start with {size:,} queued", median(ready), "s", ready)
    smallest, largest = sizes[0], sizes[-1]
    ratios = [b["rate"] / a["rate"] for a, b in zip(results[smallest], results[largest], strict=True)]
    figures.add("rate_ratio", f"rate at {largest:,} / rate at {smallest:,}", median(ratios), "x", ratios)
    figures.save()


if __name__ == "__main__":
    main()
