"""`ardm choose-order RUN`: try a few coding orders on training images, keep the best in the run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from ardm.checkpoint import CONFIG_FILE, atomic_write_bytes, load_model, read_config
from ardm.modalities import get_modality
from ardm.order_choice import choose_order_seed


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "choose-order",
        help="pick the coding order that compresses training images best",
        description="Compute the exact code length of N training images under the orders of "
        "seeds 0..S-1 at a budget, and store the best seed in the run's config.json "
        "(order_seed), which compress then uses.",
    )
    p.add_argument("run_dir", help="run directory written by `ardm train`")
    p.add_argument("--seeds", type=int, default=8, help="how many order seeds to try")
    p.add_argument("--images", type=int, default=32, help="training images to measure on")
    p.add_argument("--budget", type=int, default=100, help="network calls per image")
    p.add_argument("--data", default=None, help="dataset (default: the run's training data)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1 or args.images < 1:
        raise ValueError("--seeds and --images must be at least 1")
    run_dir = Path(args.run_dir)
    config = read_config(run_dir)
    model = load_model(run_dir)
    data_name = args.data or config.get("dataset") or config.get("train", {}).get("data")
    if not data_name:
        raise ValueError("the run does not name its dataset; pass --data")
    data = get_modality(model.modality).load(data_name, "train")[: args.images]
    seeds = tqdm(range(args.seeds), desc="orders", unit="seed")
    best, bits = choose_order_seed(model, data, args.budget, seeds)
    dims = data.numel()
    for seed, total in bits.items():
        mark = "  <- best" if seed == best else ""
        print(f"seed {seed:>3}: {total / dims:.4f} bits/dim{mark}")
    config["order_seed"] = best
    atomic_write_bytes(run_dir / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    print(f"order_seed = {best} written to {run_dir / CONFIG_FILE}")
    return 0
