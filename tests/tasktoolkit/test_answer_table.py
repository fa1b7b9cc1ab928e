"""The handler's answer table in code (tasktoolkit/answers.py) is the table of docs/handlers.md."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from tasktoolkit.answers import Answer, RecordEffect, Situation

DOC = Path(__file__).resolve().parents[2] / "docs" / "handlers.md"
HEADING = "## What each situation answers"


def doc_rows() -> list[list[str]]:
    """The cells of each body row of the first table under the heading."""
    section = DOC.read_text(encoding="utf-8").split(HEADING, 1)[1]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table[2:]]


def as_answer(situation: str, answer: str, record: str) -> Answer:
    """What a doc row says: the bold status (else the response's own), the headers added, the record word."""
    status = re.search(r"\*\*(\d{3})\*\*", answer)
    return Answer(
        situation=situation,
        status=int(status.group(1)) if status else None,
        headers=tuple(re.findall(r"(?:\+|plus) `([A-Za-z-]+)", answer)),
        record=RecordEffect(re.split(r"[ ,;]", record, maxsplit=1)[0]),
    )


def test_every_row_of_the_doc_is_a_situation_in_code_and_back() -> None:
    rows = doc_rows()
    assert len(rows) == len(Situation)
    for cells in rows:
        [match] = [s for s in Situation if cells[0].startswith(s.answer.situation)]
        documented = as_answer(match.answer.situation, *cells[1:])
        assert documented == match.answer, cells[0]


def test_the_parser_reads_status_headers_and_record() -> None:
    parsed = as_answer("x", "**503** + `Retry-After: ceil(delay_s)`", "released")
    assert parsed == Answer("x", 503, ("Retry-After",), RecordEffect.RELEASED)
    assert as_answer("x", "its response", "COMPLETED, response stored").record is RecordEffect.COMPLETED
