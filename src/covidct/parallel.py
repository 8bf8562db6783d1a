"""How many CPUs this process may use, and the two ways covidct spreads work over them.

Threads where the work releases the GIL (NumPy, scikit-image); forked worker processes where it
does not (pydicom's JPEG decoders), on platforms that fork. Results never depend on either.

A command can fork its worker processes first thing (:func:`start_worker_processes`), while the
process is small and has one thread, and then import the heavy modules in a background thread
(:func:`import_in_background`) while the main thread reads the input: the workers decode DICOM
while torch loads.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Worker processes forked by :func:`start_worker_processes`, used by :func:`process_map`.
_WORKERS: ProcessPoolExecutor | None = None


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


def process_map(fn: Callable[[T], R], items: Iterable[T], chunksize: int = 8, min_items: int = 16) -> Iterator[R]:
    """``fn`` over ``items`` (in order) in worker processes, one per available CPU: those of
    :func:`start_worker_processes`, else forked for the call. In this process where there are
    fewer than ``min_items`` items (forking would cost more), the platform cannot fork or there is
    one CPU. ``fn`` must be a module-level function; its exceptions reach the caller."""
    items = list(items)
    if _WORKERS is not None and len(items) >= min_items:
        yield from _WORKERS.map(fn, items, chunksize=chunksize)
        return
    workers = min(len(items), available_cpus())
    pool: Executor | None = None
    if workers > 1 and len(items) >= min_items and "fork" in multiprocessing.get_all_start_methods():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    if pool is None:
        yield from map(fn, items)
        return
    with pool:
        yield from pool.map(fn, items, chunksize=chunksize)


def start_worker_processes() -> None:
    """Fork :func:`process_map`'s worker processes now (one per available CPU, kept until the
    interpreter exits). Call it before any thread starts: forking a multi-threaded process is
    unsafe. Does nothing where the platform cannot fork or there is one CPU."""
    global _WORKERS
    n = available_cpus()
    if _WORKERS is not None or n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return
    _WORKERS = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
    list(_WORKERS.map(abs, range(n)))  # a fork pool starts all its workers on the first task


def import_in_background(*modules: str) -> threading.Thread:
    """Import ``modules`` in a daemon thread (after :func:`start_worker_processes`); a later
    import of the same module waits for it. Import errors surface at that later import."""

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  (the main thread's own import reports it)
                return

    thread = threading.Thread(target=work, name="covidct-preload", daemon=True)
    thread.start()
    return thread
