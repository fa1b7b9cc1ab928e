"""A trivial aiohttp task handler that records when each task arrived (the benchmarks' delivery sink).

Usage: python bench/sink.py --port PORT
Any POST is answered 200 and recorded (arrival time, X-CloudTasks-TaskETA, queue id); GET /stats,
GET /deliveries and GET /reset read and clear the record.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

times: list[float] = []
etas: list[float | None] = []
queues: list[str] = []


async def deliver(request: web.Request) -> web.Response:
    await request.read()
    times.append(time.time())
    eta = request.headers.get("X-CloudTasks-TaskETA")
    try:
        etas.append(float(eta) if eta else None)
    except ValueError:
        etas.append(None)
    queues.append(request.headers.get("X-CloudTasks-QueueName", "").rpartition("/")[2])
    return web.Response(text="ok")


async def stats(request: web.Request) -> web.Response:
    first = times[0] if times else None
    last = times[-1] if times else None
    return web.json_response({"count": len(times), "first": first, "last": last})


async def deliveries(request: web.Request) -> web.Response:
    return web.json_response({"times": times, "etas": etas, "queues": queues})


async def reset(request: web.Request) -> web.Response:
    times.clear()
    etas.clear()
    queues.clear()
    return web.json_response({})


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/deliveries", deliveries)
    app.router.add_get("/reset", reset)
    app.router.add_post("/{tail:.*}", deliver)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print(f"sink on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
