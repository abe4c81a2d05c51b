"""Training throughput (images/s) of the U-Net presets on Fashion-MNIST, as a table.

Each preset runs a few full training steps (OA-ARDM loss, backward, AdamW) on real Fashion-MNIST
batches, after warm-up, and reports the best and the median step; the ratio column compares each
preset with ``tiny`` measured in the same run. ``paper`` is the paper's CIFAR-10 architecture and is
skipped unless asked for (it is meant for a GPU).

    python benchmarks/bench_train.py                       # tiny, small, base on the CPU
    python benchmarks/bench_train.py --presets small --threads 1 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ardm.data import load_dataset
from ardm.models import OrderAgnosticARDM
from ardm.nets import UNET_PRESETS, build_net


def measure(
    preset: str, images: torch.Tensor, batch_size: int, steps: int, device: str
) -> tuple[float, float, int]:
    """(best, median) images/s over ``steps`` timed training steps, and the parameter count."""
    data_shape = tuple(images.shape[1:])
    model = OrderAgnosticARDM(build_net(preset, 256, data_shape), 256, data_shape).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 2):  # two warm-up steps
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        x = images[idx].to(device, torch.long)
        start = time.perf_counter()
        loss, _ = model.training_loss(x, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    return batch_size / min(times), batch_size / statistics.median(times), params


def main(argv: list[str] | None = None) -> list[str]:
    """Run the benchmark; returns (and prints) the lines of the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"],
                        choices=sorted(UNET_PRESETS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_dataset("fashion-mnist", "train")[:4096]
    lines = [
        f"training throughput, Fashion-MNIST 28x28, batch {args.batch_size}, "
        f"{args.device}, {torch.get_num_threads()} threads",
        f"{'preset':<8} {'params':>8} {'best img/s':>11} {'median img/s':>13} {'vs tiny':>8}",
    ]
    print(lines[0], flush=True)
    print(lines[1], flush=True)
    baseline = None
    for preset in args.presets:
        best, median, params = measure(preset, images, args.batch_size, args.steps, args.device)
        if preset == "tiny":
            baseline = median
        ratio = f"{median / baseline:.3f}" if baseline else "-"
        line = f"{preset:<8} {params / 1e6:>7.2f}M {best:>11.1f} {median:>13.1f} {ratio:>8}"
        print(line, flush=True)
        lines.append(line)
    return lines


if __name__ == "__main__":
    main()
