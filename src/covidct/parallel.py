"""How many CPUs this process may use, and the two ways covidct spreads work over them.

Threads where the work releases the GIL (NumPy, scikit-image); forked worker processes where it
does not (pydicom's JPEG decoders), on platforms that fork. Results never depend on either.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` in a thread per available CPU (in order)."""
    items = list(items)
    workers = min(len(items), available_cpus())
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def process_map(fn: Callable[[T], R], items: Iterable[T], chunksize: int = 8) -> Iterator[R]:
    """``fn`` over ``items`` (in order) in forked worker processes, one per available CPU; in this
    process where the platform cannot fork or there is one CPU. ``fn`` must be a module-level
    function; its exceptions reach the caller."""
    items = list(items)
    workers = min(len(items), available_cpus())
    pool: Executor | None = None
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    if pool is None:
        yield from map(fn, items)
        return
    with pool:
        yield from pool.map(fn, items, chunksize=chunksize)
