"""Network evaluation whose outputs are bit-identical however the items are grouped.

Lossless decoding needs the very same logits that encoding used. Every network call of the codec
runs under :func:`ardm.coding.portable.portable_evaluation`, where each row's result is exact in
any summation order: it depends only on that row, never on its neighbours, the batch size, the
thread count or the CPU's instruction set. The rows are cut into chunks of ``rows`` rows
(``EVAL_ROWS``, or the modality's ``coding_rows``: audio items are large enough to run one at a
time; the last chunk may be shorter), the unit of parallel work: each chunk runs on one of this
module's threads with one intra-op thread, so that the threads do not compete.

Why a pool of our own threads: ``torch.set_num_threads`` writes a process-wide value, but what a
kernel actually uses is the *calling thread's* OpenMP (and MKL) thread count. Every chunk runs on
one of a few long-lived threads of this module, each set to one intra-op thread once, when it
starts (under a lock, the process-wide value restored right after), so chunks run side by side
without oversubscribing the CPUs and the caller's thread is never switched. (The results would
be the same with any thread count: only the speed depends on it.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ardm.coding.portable import portable_evaluation

EVAL_ROWS = 8  # rows per chunk: the outputs do not depend on it, the order of a joint stream's digits does

_POOL_LOCK = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process id that made it, the pool)
_thread = threading.local()  # .evaluates: this is one of the pool's threads


def _num_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the platform says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _one_thread_here() -> None:
    """Make the current thread's torch ops single-threaded (a pool thread: nobody restores it)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _start_pool() -> ThreadPoolExecutor:
    """The evaluation threads, every one started and set to one intra-op thread now."""
    size = _num_cpus()
    previous = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="ardm-eval")
    barrier = threading.Barrier(size)

    def start() -> None:  # every task waits for the others, so each runs on its own thread
        _one_thread_here()
        _thread.evaluates = True
        barrier.wait(timeout=60)

    try:
        for future in [pool.submit(start) for _ in range(size)]:
            future.result()
    finally:
        # Setting a thread's count also set the process-wide value: give the caller's back.
        torch.set_num_threads(previous)
    return pool


def _evaluation_pool() -> ThreadPoolExecutor:
    global _pool
    with _POOL_LOCK:
        if _pool is None or _pool[0] != os.getpid():  # a forked child has no threads of it
            _pool = (os.getpid(), _start_pool())
        return _pool[1]


def evaluate_in_fixed_chunks(
    fn: Callable[..., torch.Tensor],
    *inputs: torch.Tensor,
    workers: int | None = None,
    rows: int = EVAL_ROWS,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, outputs)`` for consecutive chunks of rows of ``fn(*inputs)``.

    Every input holds one row per item along its first axis; ``fn`` sees ``rows`` rows of each
    at a time (fewer in the last chunk), under the portable evaluation, on one of this module's
    evaluation threads with one intra-op thread.
    At most ``workers`` chunks (default: the number of CPUs) run at once.

    ``outputs`` is float32 numpy of shape (len(rows), *fn's per-row output shape). Chunks come
    back in order.

    Example:
        >>> f = lambda x, k: torch.nn.functional.one_hot(x, 3).float()
        >>> x = torch.tensor([[0, 1], [2, 2], [1, 0]]); known = torch.ones_like(x, dtype=bool)
        >>> [(s.start, s.stop, out.shape) for s, out in evaluate_in_fixed_chunks(f, x, known)]
        [(0, 3, (3, 2, 3))]
    """
    num_rows = inputs[0].shape[0]
    slices = [slice(i, min(i + rows, num_rows)) for i in range(0, num_rows, rows)]
    workers = max(1, min(workers or _num_cpus(), len(slices)))

    def run(chunk: slice) -> np.ndarray:
        _one_thread_here()
        with torch.inference_mode(), portable_evaluation():
            out = fn(*[tensor[chunk].contiguous() for tensor in inputs]).float()
        return out.cpu().numpy()

    if getattr(_thread, "evaluates", False):  # called from inside an evaluation: no waiting on
        for chunk in slices:                  # the pool from one of its own threads
            yield chunk, run(chunk)
        return
    pool = _evaluation_pool()
    # Keep at most 2 chunks per worker in flight so memory stays bounded.
    pending: list[tuple[slice, Future[np.ndarray]]] = []
    for chunk in slices:
        pending.append((chunk, pool.submit(run, chunk)))
        if len(pending) >= 2 * workers:
            done_rows, future = pending.pop(0)
            yield done_rows, future.result()
    for done_rows, future in pending:
        yield done_rows, future.result()
