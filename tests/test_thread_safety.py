"""Coding is reproducible whatever other threads do: concurrent ``compress`` calls and a thread
that keeps changing ``torch.set_num_threads`` (issue #12).

The image model's outputs differ in their last bits between 1 and 2+ intra-op threads, so a blob
whose network calls ran with another thread count does not decode. The jobs below have more rows
than one evaluation chunk, so every call runs several chunks at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import ardm
from ardm.coding.deterministic import evaluate_in_fixed_chunks
from ardm.pretrained import bundled_text


@pytest.fixture(scope="module")
def jobs():
    image_model, text_model = ardm.load(), ardm.load("kjv")
    images, text = ardm.bundled_images(), bundled_text()
    return [
        (images[:5], image_model, "joint"),
        (images[5:], image_model, "independent"),
        (images[3], image_model, "joint"),
        (text[:3].reshape(-1)[:600], text_model, "independent"),
    ]


class _Flipper:
    """A thread that sets torch's thread count to 1, 2, 3, 4, 1, ... until stopped."""

    def __enter__(self) -> _Flipper:
        self.stop = threading.Event()
        self.flips = 0

        def flip() -> None:
            while not self.stop.is_set():
                torch.set_num_threads(1 + self.flips % 4)
                self.flips += 1
                self.stop.wait(0.0002)

        self.thread = threading.Thread(target=flip, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_concurrent_compress_with_a_thread_count_flipper_gives_the_single_threaded_blobs(jobs):
    previous = torch.get_num_threads()
    reference = [ardm.compress(x, m, budget=3, mode=mode) for x, m, mode in jobs]
    try:
        with _Flipper() as flipper, ThreadPoolExecutor(len(jobs)) as callers:
            blobs = list(callers.map(lambda job: ardm.compress(job[0], job[1], budget=3, mode=job[2]),
                                     jobs))
            decoded = list(callers.map(lambda a: ardm.decompress(a[0], a[1][1]), zip(blobs, jobs)))
        assert flipper.flips > 10
    finally:
        torch.set_num_threads(previous)
    for (x, _, mode), ref, blob, out in zip(jobs, reference, blobs, decoded):
        assert blob == ref, f"{mode} blob of {tuple(x.shape)} changed under concurrency"
        assert torch.equal(out, x) and out.dtype == x.dtype


def test_coding_leaves_the_callers_thread_count_alone(jobs):
    x, model, _ = jobs[0]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        blob = ardm.compress(x[:2], model, budget=3)
        assert torch.get_num_threads() == 2
        ardm.decompress(blob, model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_evaluation_runs_single_threaded_off_the_callers_thread():
    seen = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads()))
        return x.float()

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        out = [o for _, o in evaluate_in_fixed_chunks(fn, torch.arange(20).reshape(20, 1))]
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(torch.from_numpy(np.concatenate(out)).reshape(-1),
                       torch.arange(20).float())
    assert seen and all(not on_main and threads == 1 for on_main, threads in seen)
