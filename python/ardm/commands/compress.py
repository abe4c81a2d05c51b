"""``ardm compress``: files in, one .ardm blob per file out.

Example:
    ardm compress shirt.png                      # -> shirt.png.ardm, the shipped image model
    ardm compress a.png b.npy -o out/ --budget 50
    ardm compress notes.txt --no-progress        # no progress bar (one is shown on a terminal)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ardm.coding import coding_steps, compress
from ardm.modalities import get_modality, modality_for_path
from ardm.pretrained import load, shipped_model_for

__all__ = ["add_parser", "run", "output_paths", "progress_bar"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compress",
        help="compress files losslessly (images: .png or .npy)",
        description="Compress each input file into its own .ardm blob. The model is chosen by "
        "the file's type (or --model) and found again from the blob at decompress. With one "
        "input, -o names the output file; with several, -o names a directory (default: beside "
        "each input). Each file is one joint stream (overhead paid once); --independent gives "
        "every item of a file its own stream, decodable alone.",
    )
    p.add_argument("inputs", nargs="+", help="files to compress")
    p.add_argument("-o", "--output", help="output file (one input) or directory (several)")
    p.add_argument("--budget", type=int, default=None,
                   help="network calls per item (default: 100, within the model's range)")
    p.add_argument("--model", default=None, help="shipped model name or run directory")
    p.add_argument("--independent", action="store_true",
                   help="every item its own stream (random access; a few bytes more per item)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (by default one is shown per file when stderr is a "
                   "terminal, in network calls)")
    return p


def progress_bar(total: int, name: str, *, quiet: bool, several: bool) -> tqdm:
    """The bar of one file, in network calls: shown when stderr is a terminal, unless ``quiet``
    (``--no-progress``); among ``several`` files it is cleared once its file is done."""
    return tqdm(total=total, desc=name, unit="call", leave=not several,
                disable=True if quiet else None)


def _check_file_fits_model(source: str, name: str, model_modality: str) -> None:
    """A file of a known type must be of the model's modality: a text file is not an image."""
    try:
        kind = modality_for_path(source).name
    except ValueError:
        return  # an unknown suffix: the model's modality decides whether it can read it
    if kind != model_modality:
        shipped = shipped_model_for(get_modality(kind), source)
        raise ValueError(
            f"{source} is {kind} data, the model {name} takes {model_modality} data; use a {kind} "
            f"model (--model {shipped} or a run of your own)"
        )


def output_paths(inputs: list[str], output: str | None, name_of) -> list[Path]:
    paths = [Path(p) for p in inputs]
    if output is not None and len(paths) == 1 and not Path(output).is_dir():
        return [Path(output)]
    folder = Path(output) if output is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return [(folder or p.parent) / name_of(p) for p in paths]


def run(args: argparse.Namespace) -> int:
    outputs = output_paths(args.inputs, args.output, lambda p: p.name + ".ardm")
    models: dict[str, object] = {}
    total_in = total_out = 0
    mode = "independent" if args.independent else "joint"
    for source, target in tqdm(
        list(zip(args.inputs, outputs)), desc="compress", unit="file",
        disable=args.no_progress or len(outputs) < 2,
    ):
        name = args.model or shipped_model_for(modality_for_path(source), source)
        if name not in models:
            models[name] = load(name)
        model = models[name]
        _check_file_fits_model(source, name, model.modality)  # type: ignore[attr-defined]
        data = get_modality(model.modality).read_file(source, model.data_shape)  # type: ignore[attr-defined]
        total = coding_steps(data, model, budget=args.budget, mode=mode)  # type: ignore[arg-type]
        with progress_bar(total, Path(source).name, quiet=args.no_progress,
                          several=len(outputs) > 1) as bar:
            blob = compress(data, model, budget=args.budget, mode=mode,  # type: ignore[arg-type]
                            progress=bar.update)
        target.write_bytes(blob)
        total_in += Path(source).stat().st_size
        total_out += len(blob)
    print(f"{len(outputs)} file(s): {total_in} bytes in, {total_out} bytes out")
    return 0
