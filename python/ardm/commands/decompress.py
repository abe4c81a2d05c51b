"""`ardm decompress`: .ardm blobs back to the exact images or arrays."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ardm.codec import decompress
from ardm.commands.compress import output_paths
from ardm.files import default_output_suffix, write_array
from ardm.pretrained import load


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = subparsers.add_parser(
        "decompress",
        help="restore files compressed by `ardm compress`, bit for bit",
        description="Decompress .ardm blobs. Output type follows -o's suffix (.png or .npy); by "
        "default the .ardm suffix is dropped and .png is used for 8-bit images, else .npy.",
    )
    d.add_argument("inputs", nargs="+", help=".ardm files")
    d.add_argument("-o", "--output", help="output file (one input) or directory (several)")
    d.add_argument("--model", default=None, help="the model that compressed the files")
    return d


def run(args: argparse.Namespace) -> int:
    model = load(args.model)
    blobs = [Path(p).read_bytes() for p in args.inputs]
    arrays = []
    for blob in tqdm(blobs, desc="decompress", unit="file", disable=len(blobs) < 2):
        arrays.append(decompress(blob, model).numpy())
    targets = output_paths(args.inputs, args.output, lambda p: p.name.removesuffix(".ardm"))
    for array, target in zip(arrays, targets):
        if not target.suffix:
            target = target.with_name(target.name + default_output_suffix(array))
        write_array(target, array)
        print(f"{target}: {array.shape} {array.dtype}")
    return 0
