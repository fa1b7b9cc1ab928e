"""Runner exposure: loopback by default, a warning when bound elsewhere, state-changing aids can be off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from reliability.api import RunnerApi
from reliability.figures import Figures, Row
from testsupport.runner_process import RunnerProcess

EXPOSED = "anyone who can reach this address can create and run tasks"


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp, as hex ``AABBCCDD``)."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                octets = bytes.fromhex(address)[::-1]  # little-endian on the machines we run on
                found.add(".".join(str(octet) for octet in octets))
    return found


def test_binds_loopback_by_default_without_warning(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess]
) -> None:
    runner = runner_process(tmp_path)
    assert listening_addresses(int(runner.url.rsplit(":", 1)[1])) == {"127.0.0.1"}
    assert not any(EXPOSED in line for line in runner.log)


def test_other_address_warns_and_no_test_aids_refuses_state_changes(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], figures: Figures
) -> None:
    runner = runner_process(tmp_path, "--host", "0.0.0.0", "--no-test-aids")
    assert listening_addresses(int(runner.url.rsplit(":", 1)[1])) == {"0.0.0.0"}
    warnings = [line for line in runner.log if EXPOSED in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "0.0.0.0" in warnings[0]
    assert "DNS rebinding" in warnings[0] and "--allowed-host" in warnings[0]

    api = RunnerApi(runner.url)
    queue = api.create_queue("exposed", rateLimits={"maxDispatchesPerSecond": 1})
    api.ok("POST", f"v2/{queue}:pause")
    task = api.create_task(queue, "http://127.0.0.1:9/x")
    refused = [api.call("POST", "runner/v1/reset", {}), api.call("POST", f"runner/v1/{task}:replay", {})]
    for answer in refused:
        error = answer.json()["error"]
        assert (answer.status_code, error["status"]) == (403, "PERMISSION_DENIED")
        assert "--no-test-aids" in error["message"]
    assert [t["name"] for t in api.all_tasks(queue)] == [task]  # nothing was reset
    assert api.attempts(task) == []  # read-only aids still answer
    figures.record(
        Row(
            "runner exposure",
            "runner serve with defaults, and with --host 0.0.0.0 --no-test-aids",
            "reset and replay asked of a runner that refuses test aids",
            bad_inputs=len(refused),
        )
    )


def test_allowed_host_on_all_addresses_refuses_forged_host_names(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess]
) -> None:
    runner = runner_process(
        tmp_path, "--host", "0.0.0.0", "--allowed-host", "runner", "--allowed-host", "tasks"
    )
    warnings = [line for line in runner.log if EXPOSED in line]
    assert len(warnings) == 1 and "Host names answered: runner, tasks" in warnings[0]
    assert "DNS rebinding" not in warnings[0]
    port = runner.url.rsplit(":", 1)[1]
    queues = f"{runner.url}/v2/projects/p/locations/l/queues"
    for forged in ("evil.example", f"evil.example:{port}", f"runner.evil.example:{port}"):
        answer = requests.get(queues, headers={"Host": forged}, timeout=10)
        error = answer.json()["error"]
        assert (answer.status_code, error["code"], error["status"]) == (403, 403, "PERMISSION_DENIED")
        assert forged in error["message"] and "--allowed-host" in error["message"]
    for named in (f"runner:{port}", "tasks", f"localhost:{port}", f"127.0.0.1:{port}"):
        assert requests.get(queues, headers={"Host": named}, timeout=10).status_code == 200
