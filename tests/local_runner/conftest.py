"""Fixtures for runner tests: ``runner serve`` as a real process."""

from testsupport.runner_process import runner_process

__all__ = ["runner_process"]
