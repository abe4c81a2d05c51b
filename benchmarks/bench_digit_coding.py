"""An order-agnostic audio model coding 16-bit values as 4 hex digits against coding them whole.

The same model and the same speech both ways, every round trip verified: "digits" is what the
codec does (per value 4 tables of 16 entries from the mixture's interval masses,
``ardm.models.digit_masses``); "whole" is the same model forced to one table of all 65,536
values per value (what it did before). Prints CPU seconds per second of audio to encode and to
decode, the blob sizes (they differ by the tables' rounding alone) and the ratios.

    python benchmarks/bench_digit_coding.py --preset small --seconds 1 --budgets 20,50

--model RUN uses a trained order-agnostic audio run instead of an untrained net of --preset
(the speeds do not depend on the weights).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ardm  # noqa: E402
from ardm.modalities.audio import (  # noqa: E402
    ASTERISK_DIR,
    audio_files,
    read_wav,
    split_files,
    values_from_samples,
)
from ardm.models import OrderAgnosticARDM  # noqa: E402
from ardm.nets import build_net  # noqa: E402

LENGTH = 8000


def _model(args: argparse.Namespace) -> OrderAgnosticARDM:
    if args.model:
        model = ardm.load(args.model)
        if model.kind != "oa" or model.digits_per_symbol == 1:
            raise SystemExit(f"{args.model} is not an order-agnostic model over many values")
        return model
    torch.manual_seed(0)
    net = build_net(args.preset, 65536, (LENGTH,), net="dilated")
    model = OrderAgnosticARDM(net, 65536, (LENGTH,), ce_weight=1e-4).eval()
    model.modality = "audio"
    # Any non-increasing curve plans policies: a synthetic one (the speeds do not depend on it).
    model.step_losses.copy_(torch.linspace(13.0, 9.0, LENGTH, dtype=torch.float64))
    return model


def _cpu_seconds(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """fn's result and the CPU seconds of the whole process (the codec's threads included)."""
    start = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="an order-agnostic audio run directory")
    parser.add_argument("--preset", default="small", help="dilated net preset when no --model")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of test speech (8 kHz)")
    parser.add_argument("--budgets", default="20,50", help="comma list of network calls per chunk")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not ASTERISK_DIR.is_dir():
        raise SystemExit("apt-get install asterisk-core-sounds-en-wav")
    model = _model(args)
    files = split_files(audio_files(ASTERISK_DIR), "test")
    joined = np.concatenate([read_wav(p)[0] for p in files])
    n = int(args.seconds * 8000)
    start = (len(joined) - n) // 2  # the middle of the test split, not its first samples
    values = values_from_samples(joined[start : start + n])
    print(f"machine: {platform.machine()}, {args.threads} thread(s); {date.today()}; "
          f"{n} samples of test speech; order-agnostic, K = 65,536, dilated net "
          f"{args.model or args.preset}")
    print("budget  coding  enc CPU s/s  dec CPU s/s   blob bits")
    for budget in [int(b) for b in args.budgets.split(",")]:
        rows = {}
        for way, digits in (("digits", model.digits_per_symbol), ("whole", 1)):
            split, model.digits_per_symbol = model.digits_per_symbol, digits
            try:
                blob, enc = _cpu_seconds(ardm.compress, values, model, budget=budget)
                back, dec = _cpu_seconds(ardm.decompress, blob, model)
            finally:
                model.digits_per_symbol = split
            if not np.array_equal(back.numpy(), values):
                raise SystemExit(f"round trip failed ({way}, budget {budget})")
            rows[way] = (enc / args.seconds, dec / args.seconds, 8 * len(blob))
            print(f"{budget:6d}  {way:6s}  {rows[way][0]:11.2f}  {rows[way][1]:11.2f}  {rows[way][2]:10d}")
        (de, dd, db), (we, wd, wb) = rows["digits"], rows["whole"]
        print(f"{budget:6d}  ratio   {we / de:10.1f}x  {wd / dd:10.1f}x  {db - wb:+10d}")


if __name__ == "__main__":
    main()
