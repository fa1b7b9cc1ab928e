"""Drives gcloud-tasks-emulator with its own gRPC client (runs in the peer's venv, not the project's).

Usage: python bench/peer_client.py --port PORT ACTION ...; prints one JSON line.
  create-queues --queues q0,q1 [--paused]     create (and pause) queues
  enqueue --queues q0,q1 --count N --threads T --target URL   N CreateTasks, round robin, T threads
  resume --queues q0,q1                       resume queues
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

PARENT = "projects/bench/locations/local"


def client(port: int) -> tasks_v2.CloudTasksClient:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("action", choices=["create-queues", "enqueue", "resume"])
    parser.add_argument("--queues", default="")
    parser.add_argument("--paused", action="store_true")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", default="")
    args = parser.parse_args()
    names = [f"{PARENT}/queues/{q}" for q in args.queues.split(",") if q]
    if args.action == "create-queues":
        c = client(args.port)
        for name in names:
            c.create_queue(parent=PARENT, queue={"name": name})
            if args.paused:
                c.pause_queue(name=name)
        print(json.dumps({"queues": len(names)}))
    elif args.action == "resume":
        c = client(args.port)
        for name in names:
            c.resume_queue(name=name)
        print(json.dumps({"resumed": len(names), "at": time.time()}))
    else:
        local = threading.local()

        def create(i: int) -> None:
            if not hasattr(local, "client"):
                local.client = client(args.port)
            body = json.dumps({"n": i, "kind": "bench"}).encode()
            local.client.create_task(
                parent=names[i % len(names)],
                task={
                    "http_request": {
                        "url": args.target,
                        "http_method": tasks_v2.HttpMethod.POST,
                        "headers": {"Content-Type": "application/json"},
                        "body": body,
                    }
                },
            )

        # The first task of each thread opens its channel and is not timed; ``count`` includes them.
        warm = min(args.threads, args.count)
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(create, range(warm)))
            started = time.perf_counter()
            if args.threads == 1:
                for i in range(warm, args.count):
                    create(i)
            else:
                list(pool.map(create, range(warm, args.count)))
            elapsed = time.perf_counter() - started
        print(json.dumps({"count": args.count, "timed": args.count - warm, "seconds": elapsed}))


if __name__ == "__main__":
    main()
