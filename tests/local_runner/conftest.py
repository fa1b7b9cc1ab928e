"""Fixtures for runner tests: ``runner serve`` as a real process."""

from reliability.sink import gate, held_sink
from testsupport.runner_process import runner_process

__all__ = ["gate", "held_sink", "runner_process"]
