"""How often a ``runner serve`` process collects cyclic garbage.

CPython starts a young-generation collection every 700 net container allocations. While the runner
dispatches, hundreds of attempts are alive at once (their tasks, requests, coroutines and futures), so
that count is crossed constantly and the collections walk the same live objects again and again: about
a sixth of the runner's CPU per dispatched task. Almost all of the runner's garbage is freed by
reference counting; collecting after 10,000 instead of 700 still bounds what cycles may hold (a few
MiB), and the collections nearly vanish.
"""

from __future__ import annotations

import gc

#: Net container allocations between young-generation collections (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


def collect_less_often() -> None:
    """Raise the young generation's threshold of this process's collector to :data:`YOUNG_THRESHOLD`.

    For the runner's own process only (``runner serve``); a process embedding the runner keeps its own
    settings. The older generations keep their thresholds (collected every 10th collection below them).
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
