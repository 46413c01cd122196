"""The ``bingo`` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

from ..engine.distributed import RanksFailed
from ..engine.rules import RULES
from ..engine.search import RESET_TARGETS
from ..evidence.estimators import ESTIMATORS
from ..pruning.gradual_ticket import KNOWN_CANDIDATES
from .compare import CompareJob, run_compare
from .compare_job import METHODS, is_method
from .compare_report import markdown_table, write_outputs
from .data import DATASETS, DataNotFoundError
from .jobs import RunSetup
from .prune_job import DEFAULT_MIN_ACCURACY, SCHEDULES, PruneJob, run_prune_job
from .models import MODELS
from .recipes import describe
from .training import LR_SCHEDULES, OPTIMIZERS


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be an integer >= 1")
    return value


def _nonnegative(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number >= 0")
    return value


def _candidates(text: str) -> tuple:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in names if c not in KNOWN_CANDIDATES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown candidates {unknown or text!r}; choose "
                                         f"from {', '.join(KNOWN_CANDIDATES)}")
    return names


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be an integer >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bingo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="train with ticket search, then prune in one shot",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = PruneJob()
    _setup_args(p, d)
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--sparsity", type=_fraction, default=None,
                      help="prune exactly this fraction of the prunable weights")
    goal.add_argument("--min-accuracy", type=_fraction, default=None,
                      help=f"prune as far as validation accuracy stays >= this "
                           f"(default when no goal is given: {DEFAULT_MIN_ACCURACY})")
    goal.add_argument("--max-loss-increase", type=float, default=None, metavar="NATS",
                      help="text datasets: prune as far as the validation loss stays <= "
                           "the dense model's + this (e.g. 0.05)")
    p.add_argument("--scope", choices=("global", "layer"), default=d.scope)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="one-shot: train with the search, then prune; gradual: prune during "
                        "the training run on the cubic schedule (--gmp-start/--gmp-end/"
                        "--gmp-every), each event choosing its mask by measured loss")
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    _compare_parser(sub)
    return parser


def _setup_args(p: argparse.ArgumentParser, d: RunSetup) -> None:
    """The options every command shares (a RunSetup's fields)."""
    p.add_argument("--model", choices=sorted(MODELS), default=d.model)
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    p.add_argument("--data-dir", default=None,
                   help="folder containing MNIST/raw/, cifar-10-batches-py/ or "
                        "tinyshakespeare/ (default: $BINGO_DATA)")
    recipe_help = "default: the model's recipe (" + describe() + ")"
    p.add_argument("--epochs", type=_positive, default=None, help=recipe_help)
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="default: the model's recipe")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="default: the model's recipe")
    p.add_argument("--lr", type=float, default=None, help="default: the model's recipe")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay (adam, sgd), decoupled for adamw (on tensors of 2+ "
                        "dimensions); default: the model's recipe")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="constant; cosine from --lr down to 0 over the run; warmup-cosine: "
                        "a linear warm-up over 5%% of the steps, then a cosine to a tenth; "
                        "default: the model's recipe")
    p.add_argument("--variants", type=_count, default=d.variants,
                   help="K, reset subsets BINGO evaluates after each training step (0: none, "
                        "keep only the gradient proxies and calibration batches; default: "
                        "8 when an estimator reads the searches (search, regression, units), "
                        "else 0)")
    p.add_argument("--fraction", type=_fraction, default=d.fraction,
                   help="share of weights (or units) each subset resets")
    p.add_argument("--metric", choices=("loss", "accuracy"), default=d.metric)
    p.add_argument("--granularity", choices=("weight", "neuron"), default=d.granularity)
    p.add_argument("--rule", choices=sorted(RULES), default=d.rule)
    p.add_argument("--reset-to", choices=RESET_TARGETS, default=d.reset_to,
                   help="what a search resets its subset to: initial values or zeros")
    p.add_argument("--proxy-every", type=_positive, default=d.proxy_every,
                   help="fold the gradients into the fisher and reset proxies every n training "
                        "steps (movement: every step) "
                        "(default %(default)s)")
    p.add_argument("--movement", action=argparse.BooleanOptionalAction, default=d.movement,
                   help="collect the movement proxy, a pass over every weight on every "
                        "training step (--no-movement: ~40%% of the proxies' cost on CPU; "
                        "the calibrated estimator then chooses among the other proxies)")
    p.add_argument("--regression-every", type=_count, default=d.regression_every,
                   help="fit the regression estimator on the searches of every n-th step "
                        "(0: off; needed by --estimator regression)")
    p.add_argument("--calibration", type=_count, default=None,
                   help="the most recent training examples the search keeps, on which the "
                        "calibrated, budgeted and units estimators measure candidate masks "
                        "(default: the model's recipe, 2048 examples; char-gpt: 256 "
                        "sequences)")
    p.add_argument("--estimator", choices=ESTIMATORS, default=d.estimator,
                   help="how searches and gradient proxies become scores (bingo.evidence.estimators)")
    p.add_argument("--refit", action="store_true",
                   help="after one-shot pruning, solve each pruned layer's kept weights by "
                        "least squares so its outputs on the kept training examples match "
                        "the dense network's (bingo.refit; no gradient step, masks unchanged; "
                        "in compare: the bingo and magnitude rows)")
    p.add_argument("--gmp-start", type=float, default=d.gmp_start,
                   help="pruning during training (gmp, bingo-gradual, --schedule gradual): "
                        "the first event of the cubic schedule, a fraction of the steps")
    p.add_argument("--gmp-end", type=float, default=d.gmp_end,
                   help="the last event, when the goal sparsity is reached")
    p.add_argument("--gmp-every", type=_positive, default=d.gmp_every,
                   help="training steps between two pruning events")
    p.add_argument("--event-margin", type=_nonnegative, default=d.event_margin,
                   help="bingo-gradual: an event leaves magnitude's mask for another "
                        "candidate's only if that one's per-example losses on the kept "
                        "examples are lower by this many standard errors (default 2; 0: the "
                        "lowest mean loss wins)")
    p.add_argument("--event-candidates", type=_candidates, default=d.event_candidates,
                   help="bingo-gradual: the rankings an event chooses between, comma "
                        "separated, the first the reference (default: the model's; "
                        "magnitude,mag+movement,lamp, char-gpt magnitude,mag+movement)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device,
                   help="where the data and models live: cpu, or cuda (cuda:N) for longer "
                        "schedules on a GPU (the same batches and initial weights as on the "
                        "CPU; one process)")
    p.add_argument("--train-limit", type=_positive, default=None,
                   help="train on only the first N training images (text: characters; "
                        "quick runs)")


def _fractions(text: str) -> List[float]:
    values = [_fraction(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one sparsity, e.g. 0.5,0.9")
    return values


def _methods(text: str) -> List[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if not is_method(m)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from "
                                         f"{','.join(METHODS)}, or bingo:<estimator> with "
                                         f"an estimator from {','.join(ESTIMATORS)}")
    return names


def _compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="every pruning method on one harness: table, plot, JSON",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = CompareJob()
    _setup_args(c, d)
    c.add_argument("--methods", type=_methods, default=None,
                   help="comma-separated, from " + ",".join(METHODS) + "; bingo:<estimator> "
                        "adds a row per estimator, scored from the same training run "
                        "(default: every method that runs on the dataset)")
    c.add_argument("--sparsities", type=_fractions, default=list(d.sparsities),
                   help="comma-separated fractions of prunable weights to remove")
    c.add_argument("--no-sparsities", action="store_true",
                   help="only the accuracy floor (with --min-accuracy)")
    c.add_argument("--min-accuracy", type=_fraction, default=None,
                   help="also prune each method as far as validation accuracy stays >= this")
    c.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help="fine-tune epochs after one-shot pruning (bingo, magnitude)")
    c.add_argument("--finetune-ramp", type=float, default=None, metavar="D",
                   help="with --finetune-epochs: prune by the method to D times the goal's "
                        "kept weights, then to its layer budgets during the first half of "
                        "the fine-tune, smallest weights first (default: 4 whenever "
                        "fine-tune epochs are asked for without --refit; 0: one shot "
                        "before the fine-tune)")
    c.add_argument("--imp-rate", type=_fraction, default=d.imp_rate)
    c.add_argument("--imp-scope", choices=("layer", "global"), default=d.imp_scope)
    c.add_argument("--imp-rounds", type=int, default=None, metavar="N",
                   help="IMP prunes at most N rounds (each one a training run: the budget); "
                        "sparsities beyond its last round get no IMP point (default: as "
                        "many rounds as the last sparsity needs)")
    c.add_argument("--rewind-step", type=int, default=d.rewind_step,
                   help="IMP rewinds to the weights after this step (0: initialization)")
    c.add_argument("--synflow-iterations", type=int, default=d.synflow_iterations,
                   help="SynFlow's rounds of pruning and rescoring (100 in Tanaka et al.)")
    c.add_argument("--sanity", action="store_true",
                   help="also run the sanity checks of Su et al. for every method")
    c.add_argument("--sanity-sparsity", type=_fraction, default=d.sanity_sparsity)
    c.add_argument("--out", type=Path, required=True,
                   help="folder for results.json, results.md, accuracy_vs_sparsity.png")
    c.add_argument("--quiet", action="store_true", help="no progress output")


def summary(result: dict) -> str:
    if result["method"] == "bingo-gradual":
        return _gradual_summary(result)
    rows = [
        ("model", f"{result['model']} on {result['dataset']} (seed {result['seed']})"),
        ("sparsity", f"{result['sparsity']:.2%} of prunable weights"),
        *_quality(result),
        *([("refit", f"val {result['refit']['accuracy_before']:.2%} pruned -> "
                     f"{result['refit']['accuracy_after']:.2%} refit, "
                     f"{result['refit']['seconds']:.1f} s")] if result.get("refit") else []),
        ("per layer", ", ".join(f"{k} {v:.1%}" for k, v in result["per_layer"].items())),
        ("seconds", f"train {result['train_seconds']:.1f}, search {result['search_seconds']:.1f}, "
                    f"score {result['score_seconds']:.1f}, prune {result['prune_seconds']:.1f}, "
                    f"total {result['total_seconds']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _quality(result: dict) -> list:
    if "pruned_val_loss" in result:  # text: the validation loss, lower is better
        return [("val loss", f"{result['dense_val_loss']:.4f} dense -> "
                             f"{result['pruned_val_loss']:.4f} pruned")]
    return [("test accuracy", f"{result['dense_accuracy']:.2%} dense -> "
                              f"{result['pruned_accuracy']:.2%} pruned"),
            ("val accuracy", f"{result['dense_val_accuracy']:.2%} dense -> "
                             f"{result['pruned_val_accuracy']:.2%} pruned")]


def _gradual_summary(result: dict) -> str:
    rows = [
        ("model", f"{result['model']} on {result['dataset']} (seed {result['seed']})"),
        ("sparsity", f"{result['sparsity']:.2%} of prunable weights, pruned during training "
                     f"in {len(result['events'])} events"),
        *(((("val loss", f"{result['pruned_val_loss']:.4f}"),) if "pruned_val_loss" in result
           else (("test accuracy", f"{result['pruned_accuracy']:.2%} "
                                   f"(val {result['pruned_val_accuracy']:.2%})"),))),
        ("events chose", ", ".join(f"{k} {v}" for k, v in result["chosen"].items())
                         + (f" ({result['vetoed']} lower losses within the margin)"
                            if result.get("vetoed") else "")),
        ("per layer", ", ".join(f"{k} {v:.1%}" for k, v in result["per_layer"].items())),
        ("seconds", f"train {result['train_seconds']:.1f}, search {result['search_seconds']:.1f}, "
                    f"events {result['prune_seconds']:.1f}, total {result['total_seconds']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@contextmanager
def _torchrun():
    """Under ``torchrun`` (WORLD_SIZE > 1): one gloo process group for the command (every
    rank trains on its slice of each global batch, the searches span the ranks), yielding
    the rank; destroyed at the end. Outside it: rank 0, nothing else."""
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield dist.get_rank() if dist.is_initialized() else 0
        return
    dist.init_process_group("gloo")
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with _torchrun() as rank:
        if rank:  # only rank 0 prints and writes
            args.quiet, args.write = True, False
        try:
            return _compare(args) if args.command == "compare" else _prune(args)
        except RanksFailed as err:
            print(f"bingo: error on rank {rank}: {err}", file=sys.stderr)
            return 1


def _prune(args: argparse.Namespace) -> int:
    job = PruneJob(**{k: v for k, v in vars(args).items()
                      if k not in ("command", "out", "quiet", "write")})
    try:
        result = run_prune_job(job, progress=not args.quiet)
    except (DataNotFoundError, ValueError, FloatingPointError) as err:
        print(f"bingo: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(summary(result))
    if args.out is not None and getattr(args, "write", True):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        if not args.quiet:
            print(f"wrote {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    fields = {k: v for k, v in vars(args).items()
              if k not in ("command", "out", "quiet", "no_sparsities", "write")}
    if args.no_sparsities:
        fields["sparsities"] = []
    job = CompareJob(**fields)
    try:
        results = run_compare(job, progress=not args.quiet,
                              log=(lambda m: None) if args.quiet else _err)
    except (DataNotFoundError, ValueError, FloatingPointError) as err:
        print(f"bingo: error: {err}", file=sys.stderr)
        return 2
    if not getattr(args, "write", True):
        return 0
    paths = write_outputs(results, args.out)
    if not args.quiet:
        print(markdown_table(results))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
