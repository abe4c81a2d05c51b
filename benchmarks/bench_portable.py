"""What the portable network evaluation costs: time and bits, against plain float32.

Every network call of the codec runs under :func:`ardm.coding.portable.portable_evaluation`,
so that blobs decode on any CPU (docs/format.md, "Network evaluation"). The peer is the same
call in plain float32, as torch runs it on this machine (what the codec did before). For each
shipped model, one coding call of ``--rows`` real test items (the codec's chunk: 8 images or
KJV records, one 8,000-sample speech chunk), in one torch thread (the codec's evaluation
threads run one each):

* the median time of ``--repeats`` calls each way, and the ratio;
* the largest difference of the coding log-probabilities, and the exact bits of the items'
  symbols at that call under each (quantized tables as the coder uses them; for the models that
  code whole values in one call), so the cost of the portable roundings in bits is measured,
  not assumed.

Example:
    python benchmarks/bench_portable.py --models kjv,fashion-mnist,speech --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import numpy as np
import torch
from bench_dp import median_seconds

import ardm
from ardm import _core
from ardm.coding.codec import _Group
from ardm.coding.portable import portable_evaluation
from ardm.pretrained import bundled_audio, bundled_text


def items(name: str, rows: int) -> torch.Tensor:
    """``rows`` real test items of the shipped model ``name`` (bundled with the package)."""
    if name == "kjv":
        return bundled_text()[:rows].long()
    if name == "fashion-mnist":
        return ardm.bundled_images()[:rows].reshape(rows, -1).long()
    clip = torch.cat(list(bundled_audio().values()))[:8000]
    return clip.long().unsqueeze(0)


def call_inputs(model, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The inputs of the middle call of budget 20 (half the symbols known), and the symbols
    that call codes (n, width)."""
    n = len(x)
    group = _Group.build(model, list(range(n)), model.num_vars, 20, 0)
    call = len(group.levels) // 2
    levels = group.levels[call].expand(n, -1)
    state = torch.where(levels > 0, torch.zeros_like(x), x)  # unknown yet where levels > 0
    positions = group.padded[call].expand(n, -1)
    return (state, levels, positions), x.gather(1, positions)


def exact_bits(model, params: torch.Tensor, symbols: torch.Tensor) -> float:
    """Bits of ``symbols`` under the quantized tables of ``params``; NaN for a model whose call
    codes digits or stages of the values (speech), whose symbols these are not."""
    if model.digits_per_symbol > 1 or model.num_stages > 1:
        return float("nan")
    k = params.shape[-1]
    tables = _core.quantize_logits(params.reshape(-1, k).numpy().astype(np.float32))
    freqs = tables.reshape(-1, k)[np.arange(symbols.numel()), symbols.reshape(-1).numpy()]
    return float(-np.log2(freqs / 2.0**24).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="kjv,fashion-mnist,speech",
                        help="shipped models, comma separated")
    parser.add_argument("--rows", type=int, default=8, help="items per call (8: the codec's chunk)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls each way (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<15}{'rows':>5}{'float32 s':>11}{'portable s':>12}{'ratio':>7}"
          f"{'max |dlogp|':>13}{'bits f32':>11}{'bits port':>11}")
    for name in args.models.split(","):
        measure(name, args.rows, args.repeats)


def coding_call(model, inputs: tuple[torch.Tensor, ...], portable: bool) -> torch.Tensor:
    with torch.inference_mode(), portable_evaluation() if portable else contextlib.nullcontext():
        return model.coding_params(*inputs)


def measure(name: str, rows: int, repeats: int) -> None:
    """One line of the table: model ``name``'s coding call, float32 against portable."""
    model = ardm.load(name)
    x = items(name, 1 if name == "speech" else rows)
    inputs, symbols = call_inputs(model, x)
    native = functools.partial(coding_call, model, inputs, False)
    portable = functools.partial(coding_call, model, inputs, True)
    a, b = native(), portable()  # warm up (and the weights' grids)
    t_native, t_portable = median_seconds(native, repeats), median_seconds(portable, repeats)
    print(f"{name:<15}{len(x):>5}{t_native:>11.3f}{t_portable:>12.3f}{t_portable / t_native:>6.2f}x"
          f"{float((a - b).abs().max()):>13.2e}{exact_bits(model, a, symbols):>11.2f}"
          f"{exact_bits(model, b, symbols):>11.2f}", flush=True)


if __name__ == "__main__":
    main()
