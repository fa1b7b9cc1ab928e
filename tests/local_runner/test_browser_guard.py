"""Browsers cannot drive the runner: Host, Origin, Sec-Fetch-Site and Content-Type over real HTTP."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local_runner.api import browser_guard
from local_runner.config import ConfigError, RunnerSettings
from local_runner.server import RunnerServer

PARENT = "projects/guard/locations/us-central1"
_ids = itertools.count()


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        yield server


def port(runner: RunnerServer) -> int:
    return int(runner.base_url.rsplit(":", 1)[1])


def send(runner: RunnerServer, method: str, path: str, headers: dict[str, str], data: Any = None) -> Any:
    """One request with exactly these extra headers (``Host`` included); the JSON answer and status."""
    response = requests.request(method, f"{runner.base_url}/{path}", headers=headers, data=data, timeout=10)
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.status_code, response.json()


def new_queue(runner: RunnerServer) -> str:
    name = f"{PARENT}/queues/q-{next(_ids)}"
    answer = requests.post(f"{runner.base_url}/v2/{PARENT}/queues", json={"name": name}, timeout=10)
    assert answer.status_code == 200, answer.text
    return name


def queue_names(runner: RunnerServer) -> list[str]:
    return [queue.name for queue in runner.service.list_queues(PARENT)]


def assert_refused(answer: tuple[int, Any], status: int, code: str, words: str) -> None:
    http_status, body = answer
    assert (http_status, body["error"]["status"], body["error"]["code"]) == (status, code, status)
    assert words in body["error"]["message"]


FOREIGN_HOSTS = ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "10.0.0.1"]
LOOPBACK_HOSTS = [
    "localhost:{port}",
    "LOCALHOST",
    "app.localhost:{port}",
    "127.0.0.1:{port}",
    "127.3.4.5",
    "[::1]:{port}",
]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_foreign_host_is_refused_when_bound_to_loopback(runner: RunnerServer, host: str) -> None:
    host = host.format(port=port(runner))
    before = queue_names(runner)
    body = f'{{"name": "{PARENT}/queues/rebound"}}'
    json_type = {"Content-Type": "application/json"}
    assert_refused(send(runner, "GET", f"v2/{PARENT}/queues", {"Host": host}), 403, "PERMISSION_DENIED", host)
    created = send(runner, "POST", f"v2/{PARENT}/queues", {"Host": host, **json_type}, body)
    assert_refused(created, 403, "PERMISSION_DENIED", "not a name this runner answers")
    assert queue_names(runner) == before


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_names_are_served(runner: RunnerServer, host: str) -> None:
    queue = new_queue(runner)
    headers = {"Host": host.format(port=port(runner)), "Content-Type": "application/json"}
    assert send(runner, "POST", f"v2/{queue}:pause", headers, "{}")[0] == 200
    assert send(runner, "GET", f"v2/{queue}", headers)[0] == 200


@pytest.mark.parametrize("path", ["certs", "jwks", ".well-known/openid-configuration"])
def test_issuer_documents_are_readable_under_any_host(runner: RunnerServer, path: str) -> None:
    response = requests.get(f"{runner.base_url}/{path}", headers={"Host": "worker.internal:8123"}, timeout=10)
    assert response.status_code == 200 and response.json()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "https://evil.example"}, 'Origin "https://evil.example"'),
        ({"Origin": "null"}, 'Origin "null"'),
        ({"Origin": "http://localhost:1"}, "Origin"),
        ({"Sec-Fetch-Site": "cross-site"}, 'Sec-Fetch-Site is "cross-site"'),
        ({"Sec-Fetch-Site": "same-site"}, 'Sec-Fetch-Site is "same-site"'),
        ({"Origin": "{own}", "Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
    ],
)
def test_cross_site_writes_are_refused(runner: RunnerServer, headers: dict[str, str], reason: str) -> None:
    queue = new_queue(runner)
    headers = {key: value.format(own=runner.base_url) for key, value in headers.items()}
    for path in (f"v2/{queue}:pause", "runner/v1/reset"):
        refused = send(runner, "POST", path, headers)  # what a form or a no-cors fetch sends: no body
        assert_refused(refused, 403, "PERMISSION_DENIED", reason)
    refused = send(runner, "DELETE", f"v2/{queue}", headers)
    assert_refused(refused, 403, "PERMISSION_DENIED", "Cross-site request refused")
    assert queue in queue_names(runner)
    assert runner.service.get_queue(queue).state.name == "RUNNING"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"name": "x"}'),
        ("text/plain;charset=UTF-8", ""),
        ("application/x-www-form-urlencoded", ""),
        ("multipart/form-data; boundary=x", "--x--\r\n"),
        (None, '{"name": "x"}'),
        ("application/octet-stream", "{}"),
    ],
)
def test_writes_need_json(runner: RunnerServer, content_type: str | None, body: str) -> None:
    queue = new_queue(runner)
    headers = {"Content-Type": content_type} if content_type is not None else {}
    for path in (f"v2/{queue}:pause", "runner/v1/reset", f"v2/{PARENT}/queues"):
        refused = send(runner, "POST", path, headers, body.encode())
        assert_refused(refused, 400, "INVALID_ARGUMENT", "Content-Type: application/json")
    assert queue in queue_names(runner)
    assert runner.service.get_queue(queue).state.name == "RUNNING"


def test_same_origin_and_plain_clients_are_served(runner: RunnerServer) -> None:
    queue = new_queue(runner)
    own = {"Origin": runner.base_url, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    assert send(runner, "POST", f"v2/{queue}:pause", own, "{}")[0] == 200
    # A POST with no body and no Content-Type, as `requests.post(url)` sends it.
    assert requests.post(f"{runner.base_url}/v2/{queue}:resume", timeout=10).status_code == 200
    charset = {"Content-Type": "application/json; charset=utf-8", "Sec-Fetch-Site": "none"}
    assert send(runner, "POST", f"v2/{queue}:pause", charset, b"{}")[0] == 200
    # A page of the runner's own may post a form (the API itself still wants a JSON body).
    form = {"Origin": runner.base_url, "Content-Type": "application/x-www-form-urlencoded"}
    assert send(runner, "POST", f"v2/{queue}:resume", form, b"")[0] == 200
    assert send(runner, "POST", f"v2/{queue}:pause", {**form, "Origin": "null"}, b"")[0] == 403
    assert send(runner, "DELETE", f"v2/{queue}", {})[0] == 200


def test_any_host_is_served_when_bound_to_all_addresses() -> None:
    settings = RunnerSettings(host="0.0.0.0", port=0, data_dir=None)
    with RunnerServer(settings) as server:
        headers = {"Host": "runner:8123", "Content-Type": "application/json"}
        body = f'{{"name": "{PARENT}/queues/compose"}}'
        assert send(server, "POST", f"v2/{PARENT}/queues", headers, body)[0] == 200
        refused = send(server, "POST", "runner/v1/reset", {**headers, "Origin": "https://evil.example"})
        assert_refused(refused, 403, "PERMISSION_DENIED", "Cross-site")


#: Host headers a page rebound to the runner's address could send, and the names the runner answers.
FORGED_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "runner.evil.example",
    "runner.example",
    "rebind.localhost.evil",
]
ANSWERED_HOSTS = [
    "runner",
    "RUNNER:{port}",
    "runner.:{port}",
    "tasks.internal",
    "localhost:{port}",
    "10.1.2.3:{port}",
    "[::1]",
]


@pytest.fixture(scope="module")
def exposed() -> Iterator[RunnerServer]:
    """A runner bound to every address that names its host names, as in Docker Compose."""
    settings = RunnerSettings(
        host="0.0.0.0", port=0, data_dir=None, allowed_hosts=("runner", "Tasks.Internal.")
    )
    with RunnerServer(settings) as server:
        yield server


@pytest.mark.parametrize("host", FORGED_HOSTS)
def test_allowed_hosts_refuse_forged_names_on_all_addresses(exposed: RunnerServer, host: str) -> None:
    host = host.format(port=port(exposed))
    before = queue_names(exposed)
    json_type = {"Content-Type": "application/json"}
    listed = send(exposed, "GET", f"v2/{PARENT}/queues", {"Host": host})
    assert_refused(listed, 403, "PERMISSION_DENIED", "--allowed-host (runner, tasks.internal)")
    body = f'{{"name": "{PARENT}/queues/rebound"}}'
    assert_refused(
        send(exposed, "POST", f"v2/{PARENT}/queues", {"Host": host, **json_type}, body),
        403,
        "PERMISSION_DENIED",
        host,
    )
    assert_refused(send(exposed, "GET", "console/", {"Host": host}), 403, "PERMISSION_DENIED", host)
    assert queue_names(exposed) == before
    assert send(exposed, "GET", "jwks", {"Host": host})[0] == 200  # public keys answer under any name


@pytest.mark.parametrize("host", ANSWERED_HOSTS)
def test_allowed_hosts_loopback_names_and_addresses_are_served(exposed: RunnerServer, host: str) -> None:
    queue = new_queue(exposed)
    headers = {"Host": host.format(port=port(exposed)), "Content-Type": "application/json"}
    assert send(exposed, "POST", f"v2/{queue}:pause", headers, "{}")[0] == 200


def test_allowed_host_extends_the_loopback_names() -> None:
    settings = RunnerSettings(port=0, data_dir=None, allowed_hosts=("app.test",))
    with RunnerServer(settings) as server:
        listed = f"v2/{PARENT}/queues"
        assert send(server, "GET", listed, {"Host": f"app.test:{port(server)}"})[0] == 200
        for forged in ("evil.example", "10.0.0.1"):  # bound to loopback: no other address either
            assert_refused(
                send(server, "GET", listed, {"Host": forged}), 403, "PERMISSION_DENIED", "app.test"
            )


@pytest.mark.parametrize(
    "bad", ["runner:8123", "http://runner", "run ner", "", "-runner", "runner/x", "a..b"]
)
def test_allowed_host_must_be_a_name_or_address(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a host name or IP address"):
        browser_guard.allowed_host_name(bad)
    with pytest.raises(ConfigError, match="--allowed-host"):
        RunnerServer(RunnerSettings(port=0, data_dir=None, allowed_hosts=(bad,)))


@pytest.mark.parametrize(
    ("given", "kept"), [("Runner.", "runner"), ("[::1]", "::1"), ("my_app-1", "my_app-1")]
)
def test_allowed_host_names_are_compared_as_hosts_send_them(given: str, kept: str) -> None:
    assert browser_guard.allowed_host_name(given) == kept


def test_serve_refuses_a_host_with_a_port(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "local_runner", "serve", "--in-memory", "--allowed-host", "runner:8123"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Invalid value for '--allowed-host'" in done.stderr and "without scheme or port" in done.stderr
