"""The rANS coder of ardm against constriction's, side by side, in one run.

For K = 2, 16 and 256 symbols: encode and decode throughput (median of several repeats) of
`ardm._core.AnsCoder`, timed from float32 logits with the quantization included, against
`constriction.stream.stack.AnsCoder` with `Categorical(perfect=False)` fed float32
probabilities that are computed before the timed region (its softmax is not counted). Both
code the same symbols; the sizes of both streams are printed next to the ideal
`sum -log2 p(x)` under the float64 softmax. Last, the batch form (`AnsCoderBatch`, 64 streams)
with 1 and 2 rayon threads, each in its own subprocess (the pool size is fixed at start).

The logits are Gaussian (scale 3) and the symbols are drawn from them: what is measured is the
coder, whose speed does not depend on where the distributions come from.

    python benchmarks/bench_coder.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from bench_dp import median_seconds

from ardm._core import AnsCoder

REPEATS = 5
CASES = [(2, 200_000), (16, 100_000), (256, 20_000)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def make_data(k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, k)).astype(np.float32)
    probs = softmax(logits)
    cum = np.cumsum(probs, axis=1)
    symbols = (rng.random((n, 1)) * cum[:, -1:] > cum).sum(axis=1).clip(0, k - 1)
    return symbols.astype(np.int32), logits, probs


def bench_ours(symbols: np.ndarray, logits: np.ndarray) -> tuple[float, float, int]:
    def encode() -> AnsCoder:
        coder = AnsCoder()
        coder.push(symbols, logits)
        return coder

    coder = encode()
    data = coder.to_bytes()
    assert (AnsCoder.from_bytes(data).pop(logits) == symbols).all()
    t_enc = median_seconds(encode, REPEATS)
    t_dec = median_seconds(lambda: AnsCoder.from_bytes(data).pop(logits), REPEATS)
    return t_enc, t_dec, coder.num_bits()


def bench_constriction(symbols: np.ndarray, probs32: np.ndarray) -> tuple[float, float, int]:
    import constriction

    model = constriction.stream.model.Categorical(perfect=False)

    def encode():  # type: ignore[no-untyped-def]
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols, model, probs32)
        return coder

    coder = encode()
    words = coder.get_compressed()
    decoded = constriction.stream.stack.AnsCoder(words).decode(model, probs32)
    assert (decoded == symbols).all()
    t_enc = median_seconds(encode, REPEATS)
    t_dec = median_seconds(
        lambda: constriction.stream.stack.AnsCoder(words).decode(model, probs32), REPEATS
    )
    return t_enc, t_dec, coder.num_bits()


BATCH_SNIPPET = """
import os, statistics, time
import numpy as np
from ardm._core import AnsCoderBatch
b, n, k = 64, 400, 256
rng = np.random.default_rng(0)
logits = rng.normal(0, 3, size=(b, n, k)).astype(np.float32)
symbols = rng.integers(0, k, size=(b, n))
def enc():
    batch = AnsCoderBatch(b)
    batch.push(symbols, logits)
    return batch
streams = enc().to_bytes_list()
te, td = [], []
for _ in range(5):
    t = time.perf_counter(); enc(); te.append(time.perf_counter() - t)
    batch = AnsCoderBatch.from_bytes_list(streams)
    t = time.perf_counter(); batch.pop(logits); td.append(time.perf_counter() - t)
print(b * n / statistics.median(te), b * n / statistics.median(td))
"""


def bench_batch(threads: int) -> tuple[float, float]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", BATCH_SNIPPET], env=env, capture_output=True, text=True, check=True
    )
    enc, dec = out.stdout.split()
    return float(enc), float(dec)


def main() -> list[str]:
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        import constriction  # noqa: F401

        have_constriction = True
    except ImportError:
        have_constriction = False
        emit("constriction is not installed (pip install constriction): ours only")

    emit(f"single stream, median of {REPEATS}; ours from float32 logits (quantization included),")
    emit("constriction from precomputed float32 probabilities; M sym/s; sizes in bits")
    header = (
        f"{'K':>5} {'N':>7} | {'enc ours':>8} {'enc cstr':>8} {'ratio':>6} | "
        f"{'dec ours':>8} {'dec cstr':>8} {'ratio':>6} | {'ideal':>10} {'ours':>10} {'cstr':>10}"
    )
    emit(header)
    for k, n in CASES:
        symbols, logits, probs = make_data(k, n)
        ideal = float(-np.log2(probs[np.arange(n), symbols]).sum())
        t_enc, t_dec, bits = bench_ours(symbols, logits)
        enc, dec = n / t_enc / 1e6, n / t_dec / 1e6
        if have_constriction:
            c_enc_t, c_dec_t, c_bits = bench_constriction(symbols, probs.astype(np.float32))
            c_enc, c_dec = n / c_enc_t / 1e6, n / c_dec_t / 1e6
            emit(
                f"{k:>5} {n:>7} | {enc:>8.2f} {c_enc:>8.2f} {enc / c_enc:>5.2f}x | "
                f"{dec:>8.2f} {c_dec:>8.2f} {dec / c_dec:>5.2f}x | "
                f"{ideal:>10.0f} {bits:>10d} {c_bits:>10d}"
            )
        else:
            emit(
                f"{k:>5} {n:>7} | {enc:>8.2f} {'-':>8} {'-':>6} | {dec:>8.2f} {'-':>8} {'-':>6} | "
                f"{ideal:>10.0f} {bits:>10d} {'-':>10}"
            )

    emit("batch form, 64 streams x 400 symbols, K = 256, M sym/s (each in a fresh process)")
    one = bench_batch(1)
    two = bench_batch(2)
    emit(f"  1 thread : encode {one[0] / 1e6:.2f}  decode {one[1] / 1e6:.2f}")
    emit(
        f"  2 threads: encode {two[0] / 1e6:.2f}  decode {two[1] / 1e6:.2f}  "
        f"(speedup {two[0] / one[0]:.2f}x / {two[1] / one[1]:.2f}x; {os.cpu_count()} CPUs)"
    )
    return lines


if __name__ == "__main__":
    main()
