"""Handler overhead: wrk against gunicorn Flask: a bare route, @task_handler + memory, Redis, Firestore dedup.

Usage: python bench/handler_overhead.py [--seconds 5] [--connections 8] [--runs 3] [--no-firestore]
       [--baseline CHECKOUT] [--smoke]
gunicorn runs 2 sync workers; wrk (1 thread) POSTs a small JSON body with a runner-signed OIDC token and
the X-CloudTasks-* headers, and a Lua script gives every request its own X-CloudTasks-TaskName, so each
request is a first delivery (verify, claim, run, complete) and never a duplicate replay. The token is
minted once from a `runner serve` key (the runner, too, reuses one token per account and audience); the
workers fetch its certificates once and cache them, and verify its signature once. Variants alternate
within each run. Besides req/s, the workers' CPU time per request (from /proc) gives the cost of
verification + dedup in us. An in-process loop times verify (a token seen before, and new tokens whose
signature is checked) and claim + complete alone (memory, and Firestore one call at a time).
The Firestore figures are measured against the Firestore emulator (``gcloud emulators firestore start``) on
this machine: they show the client's CPU and the round trips, not a production latency (a real Firestore
commit takes milliseconds, and the emulator is not a database).
`--baseline` also serves (b) and (c) from another checkout's `tasktoolkit` (e.g. `git worktree add --detach
DIR main`), alternating with this one's, for a before/after from one invocation.
Prints one figure per line and writes bench/results/handler_overhead.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BENCH, Child, Figures, Gunicorn, Runner, median

LUA = """
counter = 0
request = function()
  counter = counter + 1
  wrk.headers["X-CloudTasks-TaskName"] = "%(prefix)s-" .. counter
  return wrk.format("POST", nil, wrk.headers, wrk.body)
end
"""


def headers(token: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "User-Agent": "Google-Cloud-Tasks",
        "X-CloudTasks-QueueName": "bench",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
        "X-CloudTasks-TaskETA": f"{time.time():.6f}",
    }


def lua_script(path: Path, token: str, prefix: str) -> Path:
    body = json.dumps(json.dumps({"n": 1}))
    lines = [LUA % {"prefix": prefix}, "wrk.method = 'POST'", f"wrk.body = {body}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers(token).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def mint(data_dir: Path, issuer: str) -> str:
    from local_runner.oidc import SigningKey, TokenIssuer

    key = SigningKey.load_or_create(data_dir)
    return TokenIssuer(key, issuer).mint(benchlib.SERVICE_ACCOUNT, benchlib.AUDIENCE, time.time())


def distinct_tokens(data_dir: Path, token: str, count: int) -> list[str]:
    """``count`` tokens with ``token``'s claims plus a different ``jti`` each, signed with the same key."""
    from google.auth import jwt

    from local_runner.oidc import SigningKey
    from tasktoolkit.oidc import peek

    signer = SigningKey.load_or_create(data_dir).signer
    claims = dict(peek(token)[1])
    return [jwt.encode(signer, {**claims, "jti": str(i)}).decode() for i in range(count)]  # type: ignore[no-untyped-call]


def in_process(runner_host: str, token: str, fresh: list[str]) -> dict[str, float]:
    """Microseconds per verify (a token seen before; a token never seen) and per memory claim + complete."""
    from tasktoolkit.dedup.base import StoredResponse
    from tasktoolkit.dedup.memory import MemoryDedupStore
    from tasktoolkit.oidc import OidcVerifier

    verifier = OidcVerifier(
        audiences=[benchlib.AUDIENCE], allowed_emails=[benchlib.SERVICE_ACCOUNT], emulator_host=runner_host
    )
    store = MemoryDedupStore()
    response = StoredResponse(200, b"ok", "text/plain")
    count = len(fresh)
    try:
        verifier.verify(token)  # fetches and caches the certificates
        started = time.perf_counter()
        for _ in range(count):
            verifier.verify(token)
        verify_us = (time.perf_counter() - started) / count * 1e6
        started = time.perf_counter()
        for other in fresh:
            verifier.verify(other)
        fresh_us = (time.perf_counter() - started) / count * 1e6
        started = time.perf_counter()
        for i in range(count):
            claim = store.claim(f"bench/t{i}", "fingerprint", lease_s=600)
            store.complete(claim.record, response, ttl_s=600)
        dedup_us = (time.perf_counter() - started) / count * 1e6
    finally:
        verifier.close()
    return {"verify_us": verify_us, "fresh_us": fresh_us, "dedup_us": dedup_us}


def start_firestore_emulator(tmp: Path, figures: Figures) -> tuple[Child, str] | None:
    """The Firestore emulator on a free port and its host:port, or None (with a note) without gcloud/Java."""
    if shutil.which("gcloud") is None or shutil.which("java") is None:
        figures.note("gcloud or java not found: the Firestore variants are skipped")
        return None
    port = benchlib.free_port()
    command = ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]
    emulator = Child(command, tmp / "firestore.log")
    benchlib.wait_for(lambda: _answers_ok(port), 60, "the Firestore emulator", interval=0.1)
    return emulator, f"127.0.0.1:{port}"


def _answers_ok(port: int) -> bool:
    """Whether the emulator answers ``GET /`` with ``Ok`` (it is ready)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
            return bool(answer.read().strip() == b"Ok")
    except OSError:
        return False


def firestore_env(host: str) -> dict[str, str]:
    """Environment of a Firestore client of the emulator (no credentials, no metadata-server probe)."""
    return {
        "FIRESTORE_EMULATOR_HOST": host,
        "GOOGLE_CLOUD_PROJECT": "bench",
        "NO_GCE_CHECK": "True",
        "METADATA_SERVER_DETECTION": "none",
    }


def firestore_in_process(host: str, count: int) -> float:
    """Microseconds per Firestore claim + complete against the emulator, one at a time."""
    from tasktoolkit.dedup.base import StoredResponse
    from tasktoolkit.dedup.firestore import FirestoreDedupStore
    from tasktoolkit.dedup.url import store_from_url

    os.environ.update(firestore_env(host))
    collection = f"bench-{uuid.uuid4().hex}"
    warm_up = FirestoreDedupStore(collection=collection, timeout_s=60)  # a cold JVM: seconds when loaded
    warm_up.claim("bench/warm-up", "fingerprint")
    warm_up.close()
    store = store_from_url(f"firestore:///{collection}")
    response = StoredResponse(200, b"ok", "text/plain")
    try:
        store.claim("bench/warm-up-2", "fingerprint")  # opens the channel
        started = time.perf_counter()
        for i in range(count):
            claim = store.claim(f"bench/t{i}", "fingerprint", lease_s=600)
            store.complete(claim.record, response, ttl_s=600)
        return (time.perf_counter() - started) / count * 1e6
    finally:
        store.close()


REDIS_LOOP = """
import sys, time, uuid
from tasktoolkit.dedup.base import StoredResponse
from tasktoolkit.dedup.redis import RedisDedupStore
store = RedisDedupStore.from_url(sys.argv[1], prefix=f"loop:{uuid.uuid4().hex}:")
response, count = StoredResponse(200, b"ok", "text/plain"), int(sys.argv[2])
store.claim("warm-up", "fingerprint")
started = time.process_time()
for i in range(count):
    store.complete(store.claim(f"bench/t{i}", "fingerprint", lease_s=600).record, response, ttl_s=600)
print((time.process_time() - started) / count * 1e6)
store.close()
"""


def redis_in_process(url: str, count: int, checkout: str | None = None) -> float:
    """Client CPU in us per Redis claim + complete, one at a time, in a new interpreter (of ``checkout``)."""
    cwd = Path(checkout).resolve() if checkout else benchlib.ROOT  # ``-c`` imports from the working directory
    command = [sys.executable, "-c", REDIS_LOOP, url, str(count)]
    return float(subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout)


WSGI_LOOP = """
import io, json, os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.update(BENCH_STORE=sys.argv[2], CLOUD_TASKS_EMULATOR_HOST=sys.argv[3])
from flask_app import app
headers, count = json.loads(sys.argv[4]), int(sys.argv[5])
base = {"REQUEST_METHOD": "POST", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
        "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "8"}
base.update(("HTTP_" + k.upper().replace("-", "_"), v) for k, v in headers.items() if k != "Content-Type")
base["CONTENT_TYPE"] = headers["Content-Type"]

def start(status, response_headers, exc_info=None):
    assert status.startswith("200"), status

def timed(path, tag):
    environs = [{**base, "PATH_INFO": path, "wsgi.input": io.BytesIO(b'{"n": 1}'),
                 "HTTP_X_CLOUDTASKS_TASKNAME": f"{tag}-{time.time_ns()}-{i}"} for i in range(count)]
    started = time.process_time()
    for environ in environs:
        b"".join(app(environ, start))
    return (time.process_time() - started) / count * 1e6

timed("/bare", "warm"), timed("/task", "warm")
bare, task = [], []
for _ in range(3):
    bare.append(timed("/bare", "b"))
    task.append(timed("/task", "t"))
print(json.dumps({"bare": sorted(bare)[1], "task": sorted(task)[1]}))
"""


def wsgi_in_process(store: str, host: str, token: str, count: int, checkout: str | None) -> float:
    """CPU in us that ``/task`` costs beyond ``/bare``, WSGI calls in a new interpreter of ``checkout``."""
    cwd = Path(checkout).resolve() if checkout else benchlib.ROOT
    command = [
        sys.executable,
        "-c",
        WSGI_LOOP,
        str(BENCH),
        store,
        host,
        json.dumps(headers(token)),
        str(count),
    ]
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout
    times = json.loads(out)
    return float(times["task"] - times["bare"])


def warm_up(url: str, token: str, count: int = 4) -> None:
    """A few deliveries, so each worker has fetched the certificates and connected before it is timed."""
    for i in range(count):
        request = urllib.request.Request(url, data=b'{"n": 1}', method="POST", headers=headers(token))
        request.add_header("X-CloudTasks-TaskName", f"warm-up-{uuid.uuid4().hex}-{i}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()


def in_process_loops(figures: Figures, args: Any, redis_url: str, host: str, token: str) -> None:
    """The in-process figures of this checkout and the baseline's, alternating, ``args.runs`` times."""
    checkouts = {"": None, "base_": args.baseline} if args.baseline else {"": None}
    found: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for prefix, checkout in checkouts.items():
            count = min(args.loop, 3000)
            found.setdefault(f"{prefix}redis_dedup_us", []).append(
                redis_in_process(redis_url, count, checkout)
            )
            for store, url in (("memory", "memory://"), ("redis", redis_url)):
                extra = wsgi_in_process(url, host, token, min(args.loop, 1000), checkout)
                found.setdefault(f"{prefix}wsgi_{store}_extra_us", []).append(extra)
    for prefix in checkouts:
        of = " (baseline)" if prefix else ""
        labels = {
            "redis_dedup_us": f"in process{of}: Redis claim + complete, client CPU",
            "wsgi_memory_extra_us": f"in process{of}: /task minus /bare per WSGI call, memory dedup",
            "wsgi_redis_extra_us": f"in process{of}: /task minus /bare per WSGI call, Redis dedup",
        }
        for key, label in labels.items():
            values = found[prefix + key]
            figures.add(prefix + key, label, median(values), "us", values)


def measure(server: Gunicorn, path: str, script: Path, args: object) -> dict[str, float]:
    before = server.worker_cpu()
    result = benchlib.wrk(f"{server.url}{path}", script, args.connections, args.seconds)  # type: ignore[attr-defined]
    cpu = server.worker_cpu() - before
    return {**result, "cpu_us": cpu / max(1, result["requests"]) * 1e6}


def main() -> None:
    p = benchlib.parser(__doc__, runs=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--loop", type=int, default=5000, help="iterations of the in-process timing")
    p.add_argument("--no-firestore", action="store_true", help="skip the Firestore emulator variants")
    p.add_argument("--baseline", help="another checkout whose (b) and (c) run too, alternating")
    args = benchlib.parse(p, seconds=1, loop=200)
    figures = Figures("handler_overhead", args)
    use_wrk = benchlib.have_wrk(figures)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        figures.note("redis-server not found: the Redis variant is skipped")
    with benchlib.workdir("handler") as tmp:
        runner_data = tmp / "runner"
        port = benchlib.free_port()
        token = mint(runner_data, f"http://127.0.0.1:{port}")
        runner = Runner(tmp, runner_data, port=port).wait_ready()
        children: list[Child] = [runner]
        try:
            loop = in_process(runner.host, token, distinct_tokens(runner_data, token, args.loop))
            figures.add(
                "verify_us", "in process: OidcVerifier.verify, a token seen before", loop["verify_us"], "us"
            )
            figures.add(
                "verify_fresh_us",
                "in process: OidcVerifier.verify, a new token (signature checked)",
                loop["fresh_us"],
                "us",
            )
            figures.add("memory_dedup_us", "in process: memory claim + complete", loop["dedup_us"], "us")
            figures.add(
                "verify_dedup_us",
                "in process: verify (token seen before) + memory dedup",
                loop["verify_us"] + loop["dedup_us"],
                "us",
            )
            firestore = None if args.no_firestore else start_firestore_emulator(tmp, figures)
            if firestore is not None:
                children.append(firestore[0])
                figures.add(
                    "firestore_dedup_us",
                    "in process: Firestore claim + complete, one at a time (emulator; 2 round trips)",
                    firestore_in_process(firestore[1], min(args.loop, 500)),
                    "us",
                )
            if not use_wrk:
                figures.save()
                return
            env = {"CLOUD_TASKS_EMULATOR_HOST": runner.host}
            base = Path(args.baseline).resolve() if args.baseline else None
            servers = {"memory": Gunicorn(tmp, {**env, "BENCH_STORE": "memory://"})}
            children.append(servers["memory"])
            if base is not None:
                servers["base_memory"] = Gunicorn(tmp, {**env, "BENCH_STORE": "memory://"}, checkout=base)
                children.append(servers["base_memory"])
            if redis_server is not None:
                redis_port = benchlib.free_port()
                redis = Child(
                    [
                        redis_server,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(redis_port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    tmp / "redis.log",
                )
                children.append(redis)
                benchlib.wait_for(lambda: benchlib.port_open(redis_port), 30, "redis-server")
                redis_url = f"redis://127.0.0.1:{redis_port}/0"
                in_process_loops(figures, args, redis_url, runner.host, token)
                servers["redis"] = Gunicorn(tmp, {**env, "BENCH_STORE": redis_url})
                children.append(servers["redis"])
                if base is not None:
                    servers["base_redis"] = Gunicorn(tmp, {**env, "BENCH_STORE": redis_url}, checkout=base)
                    children.append(servers["base_redis"])
            if firestore is not None:
                firestore_store = {**firestore_env(firestore[1]), "BENCH_STORE": "firestore:///bench-handler"}
                servers["firestore"] = Gunicorn(tmp, {**env, **firestore_store})
                children.append(servers["firestore"])
            variants = {
                "bare": (servers["memory"], "/bare", "(a) bare Flask route"),
                "memory": (servers["memory"], "/task", "(b) @task_handler, OIDC + memory dedup"),
            }
            if "redis" in servers:
                variants["redis"] = (servers["redis"], "/task", "(c) @task_handler, OIDC + Redis dedup")
            if base is not None:
                variants["base_memory"] = (servers["base_memory"], "/task", "(b) of the baseline")
                if "base_redis" in servers:
                    variants["base_redis"] = (servers["base_redis"], "/task", "(c) of the baseline")
            if "firestore" in servers:
                label = "(d) @task_handler, OIDC + Firestore dedup (emulator)"
                variants["firestore"] = (servers["firestore"], "/task", label)
            for server, path, _ in variants.values():
                warm_up(f"{server.url}{path}", token)
            runs: dict[str, list[dict[str, float]]] = {key: [] for key in variants}
            for run in range(args.runs):
                for key, (server, path, _) in variants.items():
                    script = lua_script(tmp / f"{key}-{run}.lua", token, f"r{run}{key}{time.time_ns()}")
                    runs[key].append(measure(server, path, script, args))
                summary = ", ".join(f"{k} {v[-1]['rps']:.0f} req/s" for k, v in runs.items())
                print(f"run {run + 1}/{args.runs}: {summary}", flush=True)
        finally:
            for child in reversed(children):
                child.stop()
    bare = median([r["cpu_us"] for r in runs["bare"]])
    for key, (_, _, label) in variants.items():
        rps = [r["rps"] for r in runs[key]]
        cpu = [r["cpu_us"] for r in runs[key]]
        figures.add(f"{key}_rps", f"{label}: throughput", median(rps), "req/s", rps)
        figures.add(f"{key}_cpu_us", f"{label}: worker CPU per request", median(cpu), "us", cpu)
        bad = sum(r["non_2xx"] for r in runs[key])
        if bad:
            figures.note(f"{key}: {bad} non-2xx answers")
        if key != "bare":
            ratios = [r["rps"] / b["rps"] for r, b in zip(runs[key], runs["bare"], strict=True)]
            figures.add(f"{key}_vs_bare", f"{label}: req/s relative to (a)", median(ratios), "x", ratios)
            figures.add(
                f"{key}_extra_cpu_us", f"{label}: extra worker CPU per request", median(cpu) - bare, "us"
            )
    figures.save()


if __name__ == "__main__":
    main()
