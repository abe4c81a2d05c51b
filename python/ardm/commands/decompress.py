"""``ardm decompress``: .ardm blobs back to the exact data, in the file's own format.

Example:
    ardm decompress shirt.png.ardm               # -> shirt.png, the model named by the blob
    ardm decompress notes.txt.ardm --no-progress # no progress bar (one is shown on a terminal)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ardm.coding import blob_model, decoding_steps, decompress
from ardm.commands.compress import output_paths, progress_bar
from ardm.modalities import get_modality
from ardm.pretrained import load

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = subparsers.add_parser(
        "decompress",
        help="restore files compressed by `ardm compress`, bit for bit",
        description="Decompress .ardm blobs with the model each blob names (or --model, for a "
        "model of your own). The output type follows -o's suffix; by default the .ardm suffix "
        "is dropped (images: .png for 8-bit images, else .npy, when no suffix is left).",
    )
    d.add_argument("inputs", nargs="+", help=".ardm files")
    d.add_argument("-o", "--output", help="output file (one input) or directory (several)")
    d.add_argument("--model", default=None, help="the model that compressed the files")
    d.add_argument("--no-progress", action="store_true",
                   help="no progress bar (by default one is shown per file when stderr is a "
                   "terminal, in network calls)")
    return d


def run(args: argparse.Namespace) -> int:
    targets = output_paths(args.inputs, args.output, lambda p: p.name.removesuffix(".ardm"))
    models: dict[str, object] = {}
    for source, target in tqdm(
        list(zip(args.inputs, targets)), desc="decompress", unit="file",
        disable=args.no_progress or len(targets) < 2,
    ):
        blob = Path(source).read_bytes()
        name = args.model or blob_model(blob)
        if name is None:
            raise ValueError(
                f"{source} was made by a model of your own; pass it with --model RUN_DIR"
            )
        if name not in models:
            models[name] = load(name)
        model = models[name]
        total = decoding_steps(blob, model)  # type: ignore[arg-type]
        with progress_bar(total, Path(source).name, quiet=args.no_progress,
                          several=len(targets) > 1) as bar:
            data = decompress(blob, model, progress=bar.update).numpy()  # type: ignore[arg-type]
        written = get_modality(model.modality).write_file(target, data)  # type: ignore[attr-defined]
        tqdm.write(f"{written}: {data.shape} {data.dtype}")  # stdout, clear of the bars
    return 0
