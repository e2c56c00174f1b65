"""Independent CPU forwards side by side: one per core, each on a single intra-op thread.

With torch's intra-op threads every op of a forward is split across the cores and ends at a barrier; a
transformer forward is thousands of short ops, and on a shared VM one preempted vCPU stalls all the others at
each of them. Batches are independent, so running one batch per core with no intra-op split removes the
barriers. On the 2-core VM this project is developed on, reading 200 dialogs of the default model was a
median 1.22x faster (0.97-1.42 over 5 alternations, the 0.97 at a quiet moment), about what two
single-threaded processes gave, and bench/extract.py's of-bound went from 0.62 and 0.65 to 0.77 and 0.70
(medians of 3 repeats, four runs in an hour). Torch ops release the GIL, so threads suffice and share the
weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T, R = TypeVar("T"), TypeVar("R")


def map_per_core(fn: Callable[[T], R], items: Sequence[T], cores: int | None = None) -> list[R]:
    """[fn(x) for x in items], run on `cores` threads (default: torch's intra-op thread count) with one intra-op
    thread each, in order. fn must not share mutable state between calls. Intra-op threads are a process-wide
    setting: it is restored on return, and nothing else should run torch in this process meanwhile."""
    cores = cores or torch.get_num_threads()
    if cores <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    before = torch.get_num_threads()
    try:
        # torch.set_num_threads is process-wide; each worker sets it as it starts, before its first op
        with ThreadPoolExecutor(cores, thread_name_prefix="forward",
                                initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(before)
