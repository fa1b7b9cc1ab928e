"""The figures each reliability scenario reports, collected into one Markdown table."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

COLUMNS = (
    "scenario",
    "load",
    "faults injected",
    "tasks lost",
    "duplicate executions at the handler",
    "bad inputs tried",
    "5xx from our code",
)


@dataclass(frozen=True)
class Row:
    """One scenario's outcome; ``None`` means the column does not apply."""

    scenario: str
    load: str
    faults: str
    lost: int | None = None
    duplicates: int | None = None
    bad_inputs: int | None = None
    server_errors: int = 0

    def cells(self) -> list[str]:
        def show(value: int | None) -> str:
            return "n/a" if value is None else f"{value:,}"

        return [
            self.scenario,
            self.load,
            self.faults,
            show(self.lost),
            show(self.duplicates),
            show(self.bad_inputs),
            show(self.server_errors),
        ]


@dataclass
class Figures:
    """Rows recorded by the tests of one run (thread-safe)."""

    rows: list[Row] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, row: Row) -> None:
        """Add a scenario's figures."""
        with self._lock:
            self.rows.append(row)

    def markdown(self) -> str:
        """The rows as a Markdown table, in the order recorded."""
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.rows]
        return "\n".join(lines)
