"""``ardm decompress``: .ardm blobs back to the exact data, in the file's own format.

Example:
    ardm decompress shirt.png.ardm               # -> shirt.png, the model named by the blob
    ardm decompress shirt.png.ardm -o back.png --force   # replace back.png if it exists
    ardm decompress notes.txt.ardm --no-progress # no progress bar (one is shown on a terminal)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ardm.coding import blob_model, blob_sample_rate, decoding_steps, decompress
from ardm.commands.compress import KEPT, OUTPUT_RULES, progress_bar, same_data
from ardm.commands.paths import check_inputs, plan_outputs, write_whole
from ardm.modalities import get_modality
from ardm.pretrained import load

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = subparsers.add_parser(
        "decompress",
        help="restore files compressed by `ardm compress` (the pixels, values, bytes or samples, "
        "exactly)",
        description="Decompress .ardm blobs with the model each blob names (or --model, for a "
        "model of your own). The output type follows -o's suffix; by default the .ardm suffix "
        "is dropped (images: .png for 8-bit images, else .npy, when no suffix is left; audio is "
        "always a .wav). Every "
        "blob carries a check of its data: a blob that does not decode to it is an error, and "
        "every written file is read back and compared before it is put in place. "
        f"{OUTPUT_RULES} {KEPT}",
    )
    d.add_argument("inputs", nargs="+", help=".ardm files")
    d.add_argument("-o", "--output",
                   help="output file (one input) or directory (an existing one, or ending in /)")
    d.add_argument("--force", action="store_true", help="replace output files that exist")
    d.add_argument("--model", default=None, help="the model that compressed the files")
    d.add_argument("--no-progress", action="store_true",
                   help="no progress bar (by default one is shown per file when stderr is a "
                   "terminal, in network calls)")
    return d


def _restored_name(path: Path) -> str:
    if path.suffix.lower() != ".ardm":
        raise ValueError(f"{path} does not end in .ardm, so there is no name to restore it to; "
                         "give one with -o FILE (or is it not a compressed file?)")
    return path.name[: -len(".ardm")]


def _decompress_one(source: str, target: Path, model, args: argparse.Namespace,
                    several: bool) -> Path:
    """Decode ``source`` and write it to ``target`` once it reads back as the decoded data."""
    blob = Path(source).read_bytes()
    try:
        total = decoding_steps(blob, model)
        with progress_bar(total, Path(source).name, quiet=args.no_progress,
                          several=several) as bar:
            data = decompress(blob, model, progress=bar.update).numpy()
        rate = blob_sample_rate(blob, model)
    except ValueError as err:
        raise ValueError(f"{source}: cannot decompress: {err}") from err
    modality = get_modality(model.modality)

    def read_back(path: Path) -> None:
        try:
            back = modality.read_file(path, model.data_shape)
        except ValueError:
            back = None
        if back is None or not same_data(back, data):
            raise ValueError(f"{target}: its format does not hold this data exactly; nothing "
                             "was written: choose another suffix with -o (.npy holds any array)")

    written = write_whole(target, lambda path: modality.write_file(path, data, rate),
                          force=args.force, check=read_back)
    tqdm.write(f"{written}: {data.shape} {data.dtype}")  # stdout, clear of the bars
    return written


def _model_name(source: str, given: str | None) -> str:
    """The model that decodes ``source``: ``--model``, else the shipped one its blob names."""
    try:
        name = given or blob_model(Path(source).read_bytes())
    except ValueError as err:
        raise ValueError(f"{source}: not an ardm blob ({err})") from err
    if name is None:
        raise ValueError(f"{source} was made by a model of your own; pass it with --model RUN_DIR")
    return name


def run(args: argparse.Namespace) -> int:
    check_inputs(args.inputs)
    names = [_model_name(source, args.model) for source in args.inputs]  # before the outputs
    targets = plan_outputs(args.inputs, args.output, _restored_name, force=args.force)
    models: dict[str, object] = {}
    for source, name, target in tqdm(
        list(zip(args.inputs, names, targets)), desc="decompress", unit="file",
        disable=args.no_progress or len(targets) < 2,
    ):
        if name not in models:
            models[name] = load(name)
        _decompress_one(source, target, models[name], args, len(targets) > 1)
    return 0
