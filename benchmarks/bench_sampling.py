"""Sampling time per budget: network calls, seconds and images/s for budgets 784 .. 10.

Each budget draws ``--n`` samples with the model's budget-optimal policy (one batch, after one
warm-up call) and reports the calls made and the speed-up against the full budget (one call per
variable, or per variable and stage for an upscale model) measured in the same run. Without
``--model`` it uses the untrained ``tiny`` U-Net preset on 28x28 images, with per-step losses
estimated on the ten bundled Fashion-MNIST test images.

    python benchmarks/bench_sampling.py                         # tiny preset, untrained
    python benchmarks/bench_sampling.py --model runs/fm --n 16
"""

from __future__ import annotations

import argparse

import torch

from ardm.evaluate import resolve_run, sample_images
from ardm.models import OrderAgnosticARDM
from ardm.nets import build_net
from ardm.pretrained import bundled_images

BUDGETS = (784, 200, 100, 50, 20, 10)


def tiny_model() -> OrderAgnosticARDM:
    """The untrained tiny preset on Fashion-MNIST's shape, step losses from the bundled images."""
    torch.manual_seed(0)
    model = OrderAgnosticARDM(build_net("tiny", 256, (1, 28, 28)), 256, (1, 28, 28)).eval()
    model.estimate_step_losses(bundled_images(), generator=torch.Generator().manual_seed(0))
    return model


def main(argv: list[str] | None = None) -> list[str]:
    """Run the benchmark; returns (and prints) the lines of the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="run directory or shipped model name")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--n", type=int, default=8, help="samples per budget (one batch)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        model, name = tiny_model(), "tiny preset (untrained)"
    else:
        model, _ = resolve_run(args.model)
        name = args.model
        if not model.has_step_losses():
            raise ValueError(f"{args.model} has no per-step losses; run `ardm eval` or retrain")
    low, high = model.min_budget, model.max_budget
    budgets = sorted(
        {min(max(int(b), low), high) for b in args.budgets.split(",")} | {high}, reverse=True
    )
    lines = [
        f"sampling {args.n} images per budget, {name}, D = {model.num_vars}, "
        f"{torch.get_num_threads()} thread(s); baseline: budget {high}"
    ]
    print(lines[-1], flush=True)
    sample_images(model, low, 1)  # warm-up
    header = f"{'budget':>7}{'calls':>7}{'seconds':>10}{'images/s':>10}{'vs full':>9}"
    lines.append(header)
    print(header, flush=True)
    baseline = None
    for budget in budgets:
        result = sample_images(model, budget, args.n, seed=budget)
        if result.calls != result.policy_calls:
            raise AssertionError(f"{result.calls} calls for a policy of {result.policy_calls}")
        baseline = baseline or result.seconds
        line = (
            f"{budget:>7}{result.calls:>7}{result.seconds:>10.2f}"
            f"{args.n / result.seconds:>10.1f}{baseline / result.seconds:>8.1f}x"
        )
        lines.append(line)
        print(line, flush=True)
    return lines


if __name__ == "__main__":
    main()
