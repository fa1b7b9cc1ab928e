"""Cost of claiming the next due task from the SQLite store, with small and large backlogs.

Usage: python bench/claim_cost.py [--sizes 1000,100000] [--claims 2000] [--runs 3]
Prints one figure per line and writes bench/results/claim_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from local_runner.model import HttpRequest, Queue, Task
from local_runner.store import SQLiteTaskStore

QUEUE = "projects/bench/locations/local/queues/q"


def fill(store: SQLiteTaskStore, size: int) -> None:
    request = HttpRequest(url="http://127.0.0.1:9/work", body=b"x" * 200)
    store.put_queue(Queue(QUEUE))
    for i in range(size):
        store.insert_task(
            Task(f"{QUEUE}/tasks/t{i}", request, schedule_time=float(i % 1000), create_time=0.0), 0.0
        )


def measure(size: int, claims: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteTaskStore(Path(tmp) / "bench.sqlite3")
        fill(store, size)
        store.close()
        store = SQLiteTaskStore(Path(tmp) / "bench.sqlite3")  # reopened: checkpointed, like a running runner
        start = time.perf_counter()
        for _ in range(claims):
            store.claim_due(QUEUE, 1e9, 1)
        elapsed = time.perf_counter() - start
        store.close()
    return elapsed / claims * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        runs = [measure(size, args.claims) for _ in range(args.runs)]
        results[size] = {"median_us": statistics.median(runs), "runs_us": runs}
        each = ", ".join(f"{r:.1f}" for r in runs)
        print(f"claim_due(limit=1) with {size} queued: {statistics.median(runs):.1f} us/claim (runs {each})")
    out = Path(__file__).parent / "results" / "claim_cost.json"
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
