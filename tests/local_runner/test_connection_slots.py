"""Connection caps derived from the open-file limit, and the slots handed out in turn (sans-IO)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from local_runner.cli import main
from local_runner.config import RunnerSettings
from local_runner.engine.slots import (
    ConnectionLimitError,
    ConnectionLimits,
    ConnectionSlots,
    connection_limits,
)
from local_runner.http_client import open_file_limit
from local_runner.server import RunnerServer

A = ("http", "127.0.0.1", 8001)
B = ("http", "127.0.0.1", 8002)


@pytest.mark.parametrize(
    ("open_files", "expected"),
    [
        (1024, ConnectionLimits(total=480, per_origin=256)),  # the common `ulimit -n`
        (20_000, ConnectionLimits(total=9_968, per_origin=256)),
        (None, ConnectionLimits(total=10_000, per_origin=256)),  # unlimited
        (256, ConnectionLimits(total=96, per_origin=96)),
        (64, ConnectionLimits(total=1, per_origin=1)),
    ],
)
def test_caps_leave_headroom_under_the_open_file_limit(
    open_files: int | None, expected: ConnectionLimits
) -> None:
    assert connection_limits(open_files) == expected


def test_a_cap_outside_the_budget_is_refused_naming_the_range() -> None:
    assert connection_limits(1024, 480) == ConnectionLimits(total=480, per_origin=480)
    for wrong in (0, 481):
        with pytest.raises(ConnectionLimitError, match=r"between 1 and 480 \(open-file limit 1024\); got"):
            connection_limits(1024, wrong)


def test_serve_refuses_a_bad_cap_as_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--in-memory", "--max-connections-per-host", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--max-connections-per-host'" in result.output
    assert f"between 1 and {connection_limits(open_file_limit()).total}" in result.output
    with pytest.raises(ConnectionLimitError):
        RunnerServer(RunnerSettings(data_dir=None, max_connections_per_host=-1))


def test_slots_respect_the_cap_per_origin_and_in_all() -> None:
    slots = ConnectionSlots(ConnectionLimits(total=3, per_origin=2))
    assert slots.take("q1", A, 5) == 2
    assert slots.take("q2", A, 1) == 0  # A is full
    assert slots.take("q3", B, 5) == 1  # one left in all
    assert slots.free(A) == slots.free(B) == 0
    assert slots.waiting == ["q1", "q2", "q3"]
    slots.release(A)
    assert slots.turns() == ["q1"]  # the first in line that the freed slot can serve


def test_a_waiter_for_a_full_origin_does_not_hold_up_another_origin() -> None:
    slots = ConnectionSlots(ConnectionLimits(total=10, per_origin=1))
    assert slots.take("a1", A, 1) == 1
    assert slots.take("a2", A, 1) == 0
    assert slots.take("b", B, 1) == 1  # a2 waits for A, not for B
    assert slots.waiting == ["a2"]


def test_no_one_jumps_the_line_and_waiters_take_turns() -> None:
    slots = ConnectionSlots(ConnectionLimits(total=3, per_origin=3))
    assert slots.take("hot", A, 100) == 3
    assert slots.take("cold", A, 2) == 0
    slots.release(A, 2)
    assert slots.turns() == ["hot"]  # the first in line wants both free slots
    assert slots.take("newcomer", A, 1) == 0  # hot is ahead
    assert slots.take("cold", A, 2) == 0  # so is it
    assert slots.take("hot", A, 100) == 2
    assert slots.waiting == ["cold", "newcomer", "hot"]  # hot went to the back after its turn
    slots.release(A, 3)
    assert slots.turns() == ["cold", "newcomer"]  # 2 + 1 slots: both are served
    assert slots.take("cold", A, 2) == 2
    assert slots.take("newcomer", A, 1) == 1
    assert slots.waiting == ["hot"]


def test_a_waiter_that_leaves_or_gets_all_it_wants_leaves_the_line() -> None:
    slots = ConnectionSlots(ConnectionLimits(total=1, per_origin=1))
    assert slots.take("q1", A, 1) == 1
    assert slots.take("q2", A, 1) == 0
    slots.withdraw("q2")
    assert slots.waiting == [] and not slots.waits("q2")
    slots.release(A)
    assert slots.take("q2", None, 5) == 1  # a destination not known yet: one slot, to learn it
    assert slots.waits("q2")


def test_a_slot_taken_before_the_destination_was_known_moves_to_it_if_it_has_room() -> None:
    slots = ConnectionSlots(ConnectionLimits(total=5, per_origin=1))
    assert slots.take("q", None, 1) == 1
    assert slots.move(None, A)
    assert slots.free(A) == 0 and slots.in_use == 1
    assert slots.take("q", None, 1) == 1
    assert not slots.move(None, A)  # A is full: the slot stays where it was
    assert slots.in_use == 2
