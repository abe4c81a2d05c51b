"""``ardm compress``: files in, one .ardm blob per file out.

Example:
    ardm compress shirt.png                      # -> shirt.png.ardm, the shipped image model
    ardm compress a.png b.npy -o out/ --budget 50
    ardm compress shirt.png --verify             # decode the blob before reporting success
    ardm compress notes.txt --no-progress        # no progress bar (one is shown on a terminal)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ardm.coding import coding_steps, compress, decoding_steps, decompress
from ardm.commands.paths import check_inputs, plan_outputs, write_whole
from ardm.distributed import process_group, shard, sum_over_ranks
from ardm.modalities import get_modality, modality_for_path
from ardm.pretrained import load, shipped_model_for

__all__ = ["add_parser", "run", "progress_bar", "same_data", "KEPT", "OUTPUT_RULES"]

#: What a round trip gives back, exactly (said in both commands' --help and in the README).
KEPT = (
    "What comes back exactly: an image's pixels (8-bit greyscale or RGB, as the model codes; "
    "anything else, such as alpha, a palette or 16 bits, is refused, never converted), not its "
    "file: PNG metadata (text chunks, ICC profile, gamma, DPI) is not kept; an .npy array's "
    "values, shape and dtype; a text file's bytes; a WAV file's bytes (16-bit mono PCM with a "
    "plain 44-byte header and its sample rate: other WAVs are refused, never converted)."
)
OUTPUT_RULES = (
    "Without -o each output is written beside its input; -o DIR (an existing directory, or a "
    "path ending in /, created) puts every output in DIR; with one input -o may name the output "
    "file; with several, -o must be a directory. An existing file is never replaced without "
    "--force. Outputs are written under a temporary name and renamed when complete."
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compress",
        help="compress files losslessly (images: .png or .npy; text files; 16-bit mono WAV)",
        description="Compress each input file into its own .ardm blob. The model is chosen by "
        "the file's type (or --model) and found again from the blob at decompress. Each file is "
        "one joint stream (overhead paid once); --independent gives every item of a file its own "
        f"stream, decodable alone. {OUTPUT_RULES} {KEPT}",
    )
    p.add_argument("inputs", nargs="+", help="files to compress")
    p.add_argument("-o", "--output",
                   help="output file (one input) or directory (an existing one, or ending in /)")
    p.add_argument("--force", action="store_true", help="replace output files that exist")
    p.add_argument("--verify", action="store_true",
                   help="decode each blob and compare it with the input before writing it (as "
                   "slow again as compressing); a mismatch writes nothing and exits 1. Off by "
                   "default: ardm compress never removes or changes its inputs, and every blob "
                   "carries a check that decompress enforces")
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
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(
            f"{source} is {kind} data, the model {name} takes {model_modality} data; use "
            f"{article} {kind} model (--model {shipped} or a run of your own)"
        )


def _check_not_blobs(paths: list[Path]) -> None:
    for path in paths:
        if path.suffix.lower() == ".ardm":
            raise ValueError(f"{path} is already compressed (an .ardm blob); ardm decompress "
                             "restores it")


def same_data(decoded: np.ndarray, data: np.ndarray) -> bool:
    """Whether ``decoded`` is ``data`` exactly: shape, dtype and every value.

    Example:
        >>> same_data(np.zeros(3, np.uint8), np.zeros(3, np.int16))
        False
    """
    return decoded.shape == data.shape and decoded.dtype == data.dtype and bool(
        np.array_equal(decoded, data)
    )


def _compress_one(source: str, target: Path, model, args: argparse.Namespace, several: bool) -> int:
    """Compress ``source`` into ``target`` (verified first with ``--verify``); its blob's size."""
    modality = get_modality(model.modality)
    # One read: audio's sample rate is kept in the blob for the WAV that decompress gives back.
    data, rate = modality.read_file_with_rate(source, model.data_shape)
    mode = "independent" if args.independent else "joint"
    try:
        total = coding_steps(data, model, budget=args.budget, mode=mode)
        with progress_bar(total, Path(source).name, quiet=args.no_progress,
                          several=several) as bar:
            blob = compress(data, model, budget=args.budget, mode=mode, progress=bar.update,
                            sample_rate=rate)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err

    def write(path: Path) -> Path:
        path.write_bytes(blob)
        return path

    def verify(path: Path) -> None:
        written = path.read_bytes()  # what is on disk, not what is in memory
        with progress_bar(decoding_steps(written, model), f"{Path(source).name} (verify)",
                          quiet=args.no_progress, several=several) as bar:
            decoded = decompress(written, model, progress=bar.update).numpy()
        if not same_data(decoded, data):
            raise ValueError(f"{source}: --verify: the blob does not decode to the input; "
                             f"nothing was written to {target} (please report this)")

    write_whole(target, write, force=args.force, check=verify if args.verify else None)
    return len(blob)


def run(args: argparse.Namespace) -> int:
    sources = check_inputs(args.inputs)
    _check_not_blobs(sources)
    models: dict[str, object] = {}
    for source in args.inputs:  # what is wrong with an input is said before what is in the way
        name = args.model or shipped_model_for(modality_for_path(source), source)
        if name not in models:
            models[name] = load(name)
        _check_file_fits_model(source, name, models[name].modality)  # type: ignore[attr-defined]
    outputs = plan_outputs(args.inputs, args.output, lambda p: p.name + ".ardm", force=args.force)
    total_in = total_out = 0
    several = len(outputs) > 1
    # Under torchrun each rank compresses every N-th file (and writes its blob), once all ranks
    # have planned the outputs; rank 0 prints the totals.
    with process_group() as d:
        for source, target in tqdm(
            shard(list(zip(args.inputs, outputs))), desc="compress", unit="file",
            disable=args.no_progress or not several or not d.is_main,
        ):
            name = args.model or shipped_model_for(modality_for_path(source), source)
            if name not in models:
                models[name] = load(name)
            model = models[name]
            _check_file_fits_model(source, name, model.modality)  # type: ignore[attr-defined]
            total_out += _compress_one(source, target, model, args, several)
            total_in += Path(source).stat().st_size
        total_in, total_out = sum_over_ranks(total_in, total_out)
    verified = ", every blob decoded and verified" if args.verify else ""
    if d.is_main:
        print(f"{len(outputs)} file(s): {total_in} bytes in, {total_out} bytes out{verified}")
    return 0
