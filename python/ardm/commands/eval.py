"""``ardm eval``: test bits/dim of a trained model under step budgets, optimal against naive policies.

Example:
    ardm eval runs/fm --budgets 784,200,100,50,20,10 --test-size 500 --plots plots/
    torchrun --nproc_per_node=4 -m ardm.cli eval runs/fm --test-size 10000   # sharded
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial
from pathlib import Path

from ardm.commands.paths import check_free, write_whole
from ardm.distributed import Dist, process_group
from ardm.evaluate import (
    EvalRow,
    describe_subset,
    ensure_step_losses,
    evaluate_budgets,
    load_held_out_images,
    load_test_images,
    parse_budgets,
    resolve_run,
    step_loss_curves,
)
from ardm.modalities import get_modality
from ardm.subsets import evenly_spaced

__all__ = ["add_parser", "run", "format_table", "check_budget_list"]

DEFAULT_BUDGETS = (784, 200, 100, 50, 20, 10)

DESCRIPTION = """\
Evaluate a model (run directory or shipped name) under budgets of network calls per item (an
image, a 256-byte text record), on test items evenly spaced over the test split. For each budget
it prints the test bits/dim (bits/byte for text) of the budget-optimal policy and of the naive
evenly spaced one: the mean of unbiased one-call estimates (nll_bpd, random orders, a fixed seed)
over the test items, +- its standard error; "exact": -log2 p(x) for the fixed coding order on a
few of the test items (the size ardm compress reaches), computed when the policy has few enough
calls; "DP": the cost the budget DP predicts from the sorted per-step losses; "vs naive": the
mean paired difference of a policy's estimates from the naive policy's on the same random
orders and steps, +- its standard error (negative: the policy codes better; a difference of more
than two standard errors is not noise). For an upscale model it
shows the optimal split of the budget across stages, the paper's equal split (both with the DP
within each stage) and the naive policy, with the calls per stage. If the model has no per-step
losses they are estimated first on held-out training items (and not saved). Under torchrun
(torchrun --nproc_per_node=N -m ardm.cli eval ...) each process takes every N-th chunk of
--batch-size test items and rank 0 prints the numbers one process prints. A plot file that
exists is replaced only with --force.

examples:
  ardm eval runs/fm
  ardm eval fashion-mnist --budgets 100,20,10 --test-size 1000 --plots plots/
  ardm eval runs/fm-up --budgets 200,50,20 --repeats 4
  ardm eval kjv --budgets 64,20 --test-size 100000 --exact-images 0   # the whole test split
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "eval", help="test bits/dim under budgets: optimal vs naive policies, plots",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("run", nargs="?", default=None,
        help="run directory (from ardm train) or shipped model name (default: the shipped one)")
    add("--budgets", default=None,
        help="comma-separated network calls per item (default: those of "
             f"{','.join(map(str, DEFAULT_BUDGETS))} the model allows, and its maximum)")
    add("--test-size", type=int, default=200,
        help="test items, evenly spaced over the test split (never its first N); more than "
             "the split holds: all of it (default: %(default)s)")
    add("--repeats", type=int, default=1,
        help="one-call estimates per test item and policy (default: %(default)s)")
    add("--seed", type=int, default=0, help="seed of the estimates (default: %(default)s)")
    add("--data", default=None,
        help="dataset name or directory (default: the run's training dataset)")
    add("--exact-images", type=int, default=8,
        help="test items for the exact fixed-order value, evenly spaced over those of "
             "--test-size; 0: none (default: %(default)s)")
    add("--exact-max-calls", type=int, default=100,
        help="compute the exact value only for policies with at most this many calls "
             "(default: %(default)s)")
    add("--holdout-size", type=int, default=200,
        help="held-out training items to estimate missing step losses (default: %(default)s)")
    add("--step-loss-evals", type=int, default=1,
        help="evaluations per step when estimating missing step losses (default: %(default)s)")
    add("--batch-size", type=int, default=64, help="items per network call (default: %(default)s)")
    add("--plots", default=None, metavar="DIR",
        help="save step_losses.png and bpd_vs_budget.png into DIR (created)")
    add("--force", action="store_true", help="replace plot files that exist")
    add("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def _default_budgets(low: int, high: int) -> str:
    budgets = [b for b in DEFAULT_BUDGETS if low <= b <= high]
    return ",".join(str(b) for b in sorted({high, *budgets}, reverse=True))


def _cell(value: float | None, width: int, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def format_table(rows: list[EvalRow]) -> list[str]:
    """The rows of :func:`ardm.evaluate.evaluate_budgets` as text lines, one line per budget.

    Example:
        >>> r = [EvalRow(10, "optimal", 10, 3.1, 0.02, 3.0, 3.05, vs_naive=-0.3, vs_naive_sem=0.004),
        ...      EvalRow(10, "naive", 10, 3.4, 0.02, 3.3)]
        >>> print("\\n".join(format_table(r)))  # doctest: +NORMALIZE_WHITESPACE
                |                        optimal                         |                         naive
         budget | calls  bits/dim    +-   exact      DP  vs naive     +- | calls  bits/dim    +-   exact      DP  vs naive     +-
             10 |    10     3.100 0.020   3.050   3.000   -0.3000 0.0040 |    10     3.400 0.020       -   3.300         -      -
    """
    policies = list(dict.fromkeys(r.policy for r in rows))
    staged = any(r.stage_budgets is not None for r in rows)
    group = f"{'calls':>6}{'bits/dim':>10}{'+-':>6}{'exact':>8}{'DP':>8}{'vs naive':>10}{'+-':>7}"
    if staged:
        group += f"  {'per stage':<14}"
    head = f"{'':>7} |" + " |".join(f"{name:^{len(group)}}" for name in policies)
    lines = [head.rstrip(), f"{'budget':>7} |" + " |".join(group for _ in policies)]
    for budget in dict.fromkeys(r.budget for r in rows):
        cells = []
        for name in policies:
            r = next(r for r in rows if r.budget == budget and r.policy == name)
            cell = (
                f"{r.calls:>6}{_cell(r.bpd, 10)}{_cell(r.bpd_sem, 6)}"
                f"{_cell(r.exact_bpd, 8)}{_cell(r.predicted_bpd, 8)}"
                f"{_cell(r.vs_naive, 10, 4)}{_cell(r.vs_naive_sem, 7, 4)}"
            )
            if staged:
                split = "+".join(str(b) for b in r.stage_budgets or ())
                cell += f"  {split:<14}"
            cells.append(cell)
        lines.append(f"{budget:>7} |" + " |".join(cells))
    return [line.rstrip() for line in lines]


def run(args: argparse.Namespace) -> int:
    """Run ``ardm eval`` with parsed arguments; returns the exit status."""
    for name in ("test_size", "repeats", "holdout_size", "step_loss_evals", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.exact_images < 0 or args.exact_max_calls < 0:
        raise ValueError("--exact-images and --exact-max-calls must be >= 0")
    if args.budgets is not None:
        check_budget_list(args.budgets)
    if args.plots:  # refused before anything is evaluated (on every rank: they share the files)
        folder = Path(args.plots)
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"--plots {args.plots} is a file: --plots takes a directory (created if missing), "
                f"where {' and '.join(p.name for p in plot_paths(folder))} are written"
            )
        for target in plot_paths(folder):
            check_free(target, args.force, "--plots")
    with process_group("cpu") as d:  # under torchrun: each rank its share, rank 0 prints
        return _evaluate(args, d)


def _evaluate(args: argparse.Namespace, d: Dist) -> int:
    say = print if d.is_main else _quiet
    progress = args.progress and d.is_main
    model, config = resolve_run(args.run)
    kind = "upscale" if model.num_stages > 1 else "order-agnostic"
    low, high = model.min_budget, model.max_budget
    budgets = parse_budgets(
        _default_budgets(low, high) if args.budgets is None else args.budgets, model
    )
    extra = f", S = {model.num_stages} stages of b = {model.symbols_per_step}" if kind == "upscale" else ""
    say(
        f"{args.run or 'shipped model'}: {kind} ARDM, D = {model.num_vars}, "
        f"K = {model.num_classes}{extra}; budgets {low}..{high}"
    )
    if not model.has_step_losses():
        held, source = load_held_out_images(model, config, args.holdout_size, args.data)
        say(f"the model has no per-step losses: estimating them on {source} "
            f"({args.step_loss_evals} evaluation(s) per step; not saved)")
        ensure_step_losses(model, held, args.step_loss_evals, args.batch_size, args.seed,
                           progress)  # every rank alike (the same generator)
    images, source = _test_items(model, config, args)
    say(f"{source}, {args.repeats} estimate(s) per item, seed {args.seed}; exact fixed-order "
        f"values on {min(args.exact_images, len(images))} item(s) for policies of <= "
        f"{args.exact_max_calls} calls")
    start = time.perf_counter()
    rows = evaluate_budgets(
        model, images, budgets, seed=args.seed, repeats=args.repeats,
        batch_size=args.batch_size, exact_images=args.exact_images,
        exact_max_calls=args.exact_max_calls, progress=progress,
    )
    for line in format_table(rows):
        say(line)
    say(f"({time.perf_counter() - start:.1f} s; bits/dim: test estimate +- standard error; "
        "exact: fixed coding order; DP: predicted from the sorted step losses; vs naive: paired "
        "difference from the naive policy +- standard error)")
    if args.plots and d.is_main:
        for path in save_plots(model, rows, Path(args.plots), force=args.force):
            say(f"plot: {path}")
    return 0


def _quiet(*_: object) -> None:
    pass


def check_budget_list(text: str) -> None:
    """A ``ValueError`` unless ``text`` is a comma-separated list of integers with no empty entry
    (``parse_budgets`` then checks each against the model).

    Example:
        >>> check_budget_list("100, 20,10")
        >>> check_budget_list("1,,2")
        Traceback (most recent call last):
        ...
        ValueError: --budgets '1,,2' has an empty entry; give comma-separated network calls per item, e.g. --budgets 100,20,10
    """
    example = "give comma-separated network calls per item, e.g. --budgets 100,20,10"
    entries = [entry.strip() for entry in text.split(",")]
    if not text.strip():
        raise ValueError(f"--budgets is empty; {example}")
    if "" in entries:
        raise ValueError(f"--budgets {text!r} has an empty entry; {example}")
    for entry in entries:
        try:
            int(entry)
        except ValueError:
            raise ValueError(
                f"--budgets {text!r}: {entry!r} is not an integer; {example}"
            ) from None


def _test_items(model, config: dict, args: argparse.Namespace):
    """The test items and where they came from: those of ``--data`` when given (an error if it
    cannot be read, never a fallback), else of the run's dataset (or the bundled images)."""
    if args.data is None:
        return load_test_images(model, config, args.test_size)
    modality = get_modality(model.modality)
    try:
        split = modality.load(args.data, "test")
    except ValueError as err:
        message = str(err)
        if Path(args.data).is_file() and "does not exist" in message:  # a file, not a dataset
            message = (f"--data {args.data} is a file; for {model.modality} models it is "
                       f"{modality.dataset_help}")
        if args.data not in message:
            message = f"--data {args.data}: {message}"
        raise ValueError(message) from err
    items = evenly_spaced(split, args.test_size)
    if tuple(items.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            f"--data {args.data} has test items of shape {tuple(items.shape[1:])}, the model "
            f"takes {tuple(model.data_shape)}"
        )
    return items, describe_subset(len(items), len(split), args.data)


def plot_paths(folder: Path) -> list[Path]:
    """The files :func:`save_plots` writes in ``folder``: step losses, bits/dim against budget."""
    return [folder / "step_losses.png", folder / "bpd_vs_budget.png"]


def save_plots(model, rows: list[EvalRow], folder: Path, force: bool = False) -> list[Path]:
    """Save the per-step loss curves and bits/dim against budget as PNGs in ``folder`` (each
    written whole; one that exists is replaced only with ``force``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    losses_path, budget_path = plot_paths(folder)
    drawings = [(losses_path, lambda: _step_loss_figure(plt, model)),
                (budget_path, lambda: _budget_figure(plt, rows))]
    written = []
    for target, draw in drawings:
        fig = draw()
        try:
            written.append(write_whole(target, partial(_save, fig), force=force,
                                       option="--plots"))
        finally:
            plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path


def _step_loss_figure(plt, model):
    """Per-step losses as estimated, and sorted as the budget DP plans with them."""
    raw, ordered = step_loss_curves(model)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for s in range(raw.shape[0]):
        label = f"stage {s}" if raw.shape[0] > 1 else None
        axes[0].plot(raw[s], lw=0.8, label=label)
        axes[1].plot(ordered[s], lw=1.2, label=label)
    axes[0].set_title("per-step loss $L_t$ (as estimated)")
    axes[1].set_title("sorted (descending), as planned")
    for ax in axes:
        ax.set_xlabel("step t (variables known)")
        ax.set_yscale("log")
        if raw.shape[0] > 1:
            ax.legend()
    axes[0].set_ylabel("bits")
    fig.tight_layout()
    return fig


def _budget_figure(plt, rows: list[EvalRow]):
    """Test bits/dim (and the DP's prediction) against the budget, one line per policy."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r.policy for r in rows):
        mine = sorted((r for r in rows if r.policy == name), key=lambda r: r.budget)
        budgets = [r.budget for r in mine]
        line = ax.errorbar(budgets, [r.bpd for r in mine], yerr=[r.bpd_sem for r in mine],
                           marker="o", capsize=2, label=f"{name} (test)")
        ax.plot(budgets, [r.predicted_bpd for r in mine], "--", color=line[0].get_color(),
                alpha=0.6, label=f"{name} (DP prediction)")
    ax.set_xscale("log")
    ax.set_xlabel("budget (network calls per item)")
    ax.set_ylabel("bits per dimension")
    ax.set_title("Test bits/dim against budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
