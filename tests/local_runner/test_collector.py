"""The runner's process collects cyclic garbage less often than CPython's default."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from local_runner.collector import YOUNG_THRESHOLD, collect_less_often


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*saved)


def test_only_the_young_generation_threshold_is_raised(thresholds: tuple[int, int, int]) -> None:
    collect_less_often()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, thresholds[1], thresholds[2])
    assert thresholds[0] < YOUNG_THRESHOLD
