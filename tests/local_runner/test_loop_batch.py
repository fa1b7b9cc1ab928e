"""LoopBatch: what is added in one turn of the loop is written in one call; each caller gets its result."""

from __future__ import annotations

import asyncio

import pytest

from local_runner.errors import AlreadyExists, StoreError
from local_runner.loop_batch import LoopBatch, Retry


def test_one_turn_is_one_write_and_each_caller_gets_its_own_result() -> None:
    writes: list[list[str]] = []

    def write(items: list[str]) -> list[str | Exception]:
        writes.append(items)
        return [AlreadyExists(f"{item} exists") if item == "taken" else item.upper() for item in items]

    async def main() -> list[str | BaseException]:
        batch: LoopBatch[str, str] = LoopBatch(write)
        return await asyncio.gather(
            *(batch.add(item) for item in ("a", "taken", "b")), return_exceptions=True
        )

    results = asyncio.run(main())
    assert writes == [["a", "taken", "b"]]
    assert results[0::2] == ["A", "B"] and isinstance(results[1], AlreadyExists)


def test_an_error_not_retried_goes_to_every_caller_of_the_batch() -> None:
    def write(items: list[str]) -> list[str]:
        raise StoreError("disk full")

    async def main() -> list[str | BaseException]:
        batch: LoopBatch[str, str] = LoopBatch(write)
        return await asyncio.gather(batch.add("a"), batch.add("b"), return_exceptions=True)

    assert [str(error) for error in asyncio.run(main())] == ["disk full", "disk full"]


def test_a_retried_write_keeps_its_items_reports_each_first_refusal_and_takes_newcomers() -> None:
    refusals_left = 2
    writes: list[list[str]] = []
    reports: list[tuple[str, bool]] = []
    pauses: list[int] = []

    def write(items: list[str]) -> list[str]:
        nonlocal refusals_left
        writes.append(items)
        if refusals_left:
            refusals_left -= 1
            raise StoreError("locked")
        return items

    async def main() -> list[str]:
        batch: LoopBatch[str, str] = LoopBatch(
            write,
            retry=Retry((StoreError,), lambda item, _, first: reports.append((item, first)), pause),
        )
        first = asyncio.ensure_future(batch.add("a"))

        async def late() -> str:
            while not pauses:  # added while the first write waits to be tried again
                await asyncio.sleep(0)
            return await batch.add("b")

        return list(await asyncio.gather(first, late()))

    async def pause(failures: int) -> None:
        pauses.append(failures)
        await asyncio.sleep(0)

    assert asyncio.run(main()) == ["a", "b"]
    assert pauses == [1, 2]
    assert writes == [["a"], ["a", "b"], ["a", "b"]]
    assert reports == [("a", True), ("a", False), ("b", True)]


@pytest.mark.parametrize("gather_s", [0.0, 0.001])
def test_gathering_waits_for_the_items_of_the_same_turn(gather_s: float) -> None:
    writes: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        writes.append(items)
        return items

    async def main() -> None:
        batch: LoopBatch[int, int] = LoopBatch(write, gather_s=gather_s)
        await asyncio.gather(*(batch.add(n) for n in range(5)))

    asyncio.run(main())
    assert writes == [[0, 1, 2, 3, 4]]
