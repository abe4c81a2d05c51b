"""`ardm compress`: image or array files in, one .ardm blob per file out."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ardm.codec import compress
from ardm.files import read_array
from ardm.pretrained import load


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compress",
        help="compress images (.png) or arrays (.npy) losslessly",
        description="Compress each input file into its own .ardm blob. With one input, -o names "
        "the output file; with several, -o names a directory (default: beside each input).",
    )
    p.add_argument("inputs", nargs="+", help=".png images or .npy integer arrays")
    p.add_argument("-o", "--output", help="output file (one input) or directory (several)")
    p.add_argument("--budget", type=int, default=None, help="network calls per item (1..D)")
    p.add_argument("--model", default=None, help="shipped model name or run directory")
    return p



def output_paths(inputs: list[str], output: str | None, suffix_of) -> list[Path]:
    paths = [Path(p) for p in inputs]
    if output is not None and len(paths) == 1 and not Path(output).is_dir():
        return [Path(output)]
    folder = Path(output) if output is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return [(folder or p.parent) / suffix_of(p) for p in paths]


def run(args: argparse.Namespace) -> int:
    model = load(args.model)
    outputs = output_paths(args.inputs, args.output, lambda p: p.name + ".ardm")
    total_in = total_out = 0
    for source, target in tqdm(
        list(zip(args.inputs, outputs)), desc="compress", unit="file", disable=len(outputs) < 2
    ):
        array = read_array(source, model.data_shape)
        blob = compress(array, model, budget=args.budget)
        target.write_bytes(blob)
        total_in += Path(source).stat().st_size
        total_out += len(blob)
    print(f"{len(outputs)} file(s): {total_in} bytes in, {total_out} bytes out")
    return 0
