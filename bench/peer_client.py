"""Drives gcloud-tasks-emulator with its own gRPC client (runs in the peer's venv, not the project's).

Usage: python bench/peer_client.py --port PORT ACTION ...; prints one JSON line.
  create-queues --queues q0,q1 [--paused]     create (and pause) queues
  enqueue --queues q0,q1 --count N --threads T --target URL   N CreateTasks, round robin, T threads
  enqueue-aio --queues q0,q1 --count N --concurrency C --target URL   the same requests from one
                                              ``grpc.aio`` channel with C calls in flight (a faster client)
  resume --queues q0,q1                       resume queues
  serve-null [--server threads|aio|core]      a gRPC server answering every CreateTask with one fixed Task
                                              and storing nothing (the client's ceiling); prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from grpc import aio

PARENT = "projects/bench/locations/local"
CREATE_TASK = "/google.cloud.tasks.v2.CloudTasks/CreateTask"


def client(port: int) -> tasks_v2.CloudTasksClient:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def task_fields(i: int, target: str) -> dict[str, Any]:
    """The task of CreateTask number ``i``: a POST of a small JSON document to ``target``."""
    body = json.dumps({"n": i, "kind": "bench"}).encode()
    return {
        "http_request": {
            "url": target,
            "http_method": tasks_v2.HttpMethod.POST,
            "headers": {"Content-Type": "application/json"},
            "body": body,
        }
    }


async def enqueue_aio(port: int, names: list[str], count: int, concurrency: int, target: str) -> float:
    """Seconds ``count`` CreateTasks take from one ``grpc.aio`` channel, ``concurrency`` calls in flight.

    The requests are serialized before the clock starts, so the client spends its time on the calls.
    """
    requests = [
        tasks_v2.CreateTaskRequest(parent=names[i % len(names)], task=task_fields(i, target))
        for i in range(count)
    ]
    wire = [type(r).serialize(r) for r in requests]
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CREATE_TASK)
        await call(wire[0])  # connect
        position = iter(wire[1:])

        async def worker() -> None:
            for request in position:
                await call(request)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def serve_null(port: int, kind: str) -> None:
    """Answer CreateTask with one fixed, pre-serialized Task until killed; prints the bound port.

    ``kind`` is ``threads`` (grpcio's threaded server, as the peer uses), ``aio`` (``grpc.aio``) or
    ``core`` (gRPC's core with one Python thread taking its completion queue and answering there: the
    runner's server without the event loop).
    """
    answer = tasks_v2.Task.serialize(tasks_v2.Task(name=f"{PARENT}/queues/null/tasks/1"))

    def create_task(request: bytes, context: grpc.ServicerContext) -> bytes:
        return answer

    async def create_task_aio(request: bytes, context: aio.ServicerContext) -> bytes:
        return answer

    def handler(behaviour: Any) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "google.cloud.tasks.v2.CloudTasks", {"CreateTask": grpc.unary_unary_rpc_method_handler(behaviour)}
        )

    if kind == "core":
        serve_core_null(port, answer)
        return
    if kind == "threads":
        server = grpc.server(ThreadPoolExecutor(16), handlers=[handler(create_task)])
        print(json.dumps({"port": server.add_insecure_port(f"127.0.0.1:{port}")}), flush=True)
        server.start()
        server.wait_for_termination()
        return

    async def run() -> None:
        server = aio.server(handlers=[handler(create_task_aio)])
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(json.dumps({"port": bound}), flush=True)
        await server.wait_for_termination()

    asyncio.run(run())


def serve_core_null(port: int, answer: bytes) -> None:
    """The ``core`` null server: every event taken and answered on this thread."""
    from grpc._cython import cygrpc

    queue = cygrpc.CompletionQueue()
    server = cygrpc.Server((("grpc.so_reuseport", 0),), False)
    server.register_completion_queue(queue)
    bound = server.add_http2_port(f"127.0.0.1:{port}".encode())
    server.start()
    new_call, sent = object(), object()
    for _ in range(16):
        server.request_call(queue, queue, new_call)
    print(json.dumps({"port": bound}), flush=True)
    while True:
        event = queue.poll()
        if event.tag is new_call:
            server.request_call(queue, queue, new_call)
            event.call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), event.call)
        elif isinstance(event.tag, cygrpc.Call):
            event.tag.start_server_batch(
                (
                    cygrpc.SendInitialMetadataOperation(None, 0),
                    cygrpc.SendMessageOperation(answer, 0),
                    cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.ok, b"", 0),
                    cygrpc.ReceiveCloseOnServerOperation(0),
                ),
                sent,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("action", choices=["create-queues", "enqueue", "enqueue-aio", "resume", "serve-null"])
    parser.add_argument("--queues", default="")
    parser.add_argument("--paused", action="store_true")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", default="")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server", choices=["threads", "aio", "core"], default="threads")
    args = parser.parse_args()
    names = [f"{PARENT}/queues/{q}" for q in args.queues.split(",") if q]
    if args.action == "serve-null":
        serve_null(args.port, args.server)
    elif args.action == "enqueue-aio":
        seconds = asyncio.run(enqueue_aio(args.port, names, args.count, args.concurrency, args.target))
        print(json.dumps({"count": args.count, "timed": args.count - 1, "seconds": seconds}))
    elif args.action == "create-queues":
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
            local.client.create_task(parent=names[i % len(names)], task=task_fields(i, args.target))

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
