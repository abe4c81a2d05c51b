"""Network evaluation whose outputs are bit-identical however the items are grouped.

Lossless decoding needs the very same logits that encoding used. On the CPU, PyTorch picks
different kernels for different batch sizes (a batch of one differs from a batch of eight in the
last bits) and splits reductions differently for different thread counts. So every network call of
the codec runs on a fixed evaluation shape of ``EVAL_ROWS`` rows (a short chunk is padded by
repeating its first row) with one intra-op thread; chunks run in parallel on a small thread pool.
Each row's result then depends only on that row, never on its neighbours or on the torch settings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

EVAL_ROWS = 8  # part of the format: changing it changes the logits, so it is pinned per version


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch ops single-threaded inside the block; restore the caller's setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pad_rows(rows: torch.Tensor) -> torch.Tensor:
    missing = EVAL_ROWS - rows.shape[0]
    if missing == 0:
        return rows
    return torch.cat([rows, rows[:1].expand(missing, *rows.shape[1:])])


def evaluate_in_fixed_chunks(
    fn: Callable[..., torch.Tensor],
    *inputs: torch.Tensor,
    workers: int | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, outputs)`` for consecutive chunks of rows of ``fn(*inputs)``.

    Every input holds one row per item along its first axis; ``fn`` sees exactly
    ``EVAL_ROWS`` rows of each at a time.

    ``outputs`` is float32 numpy of shape (len(rows), *fn's per-row output shape). Chunks come
    back in order.

    Example:
        >>> f = lambda x, k: torch.nn.functional.one_hot(x, 3).float()
        >>> x = torch.tensor([[0, 1], [2, 2], [1, 0]]); known = torch.ones_like(x, dtype=bool)
        >>> [(s.start, s.stop, out.shape) for s, out in evaluate_in_fixed_chunks(f, x, known)]
        [(0, 3, (3, 2, 3))]
    """
    num_rows = inputs[0].shape[0]
    slices = [slice(i, min(i + EVAL_ROWS, num_rows)) for i in range(0, num_rows, EVAL_ROWS)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(slices)))

    def run(rows: slice) -> np.ndarray:
        with torch.inference_mode():
            out = fn(*[_pad_rows(tensor[rows]) for tensor in inputs]).float()
        return out[: rows.stop - rows.start].cpu().numpy()

    with one_intra_op_thread():
        if workers == 1:
            for rows in slices:
                yield rows, run(rows)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # Keep at most 2 chunks per worker in flight so memory stays bounded.
            pending = []
            for rows in slices:
                pending.append((rows, pool.submit(run, rows)))
                if len(pending) >= 2 * workers:
                    done_rows, future = pending.pop(0)
                    yield done_rows, future.result()
            for done_rows, future in pending:
                yield done_rows, future.result()
