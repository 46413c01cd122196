"""What a least-squares refit of the kept weights adds to one-shot pruning (not a
library feature: a measurement behind docs/results.md, *LeNet-SGD*).

For each seed: one training run with the default search (K = 0, as `bingo compare`
trains it: same data order and initial weights), its weights pruned one-shot by the calibrated estimator and by magnitude at
each sparsity, then every Linear layer in turn refit: its kept weights and bias solved
in closed form (ridge ``--ridge`` times the mean diagonal) so that its pre-activations
on the search's kept examples, fed by the already refit layers before it, match the
dense network's. No gradient step; the masks do not change. Prints one Markdown row per
(seed, sparsity) with the test accuracies one-shot and refit.

    python experiments/refit_after_pruning.py --data-dir ../shared/data --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import copy
from typing import Dict, List

import torch
from torch import nn

from bingo.compare import CompareJob
from bingo.data import load_dataset
from bingo.models import build_model
from bingo.pruning import prune
from bingo.training import accuracy, make_optimizer, train


def _linears(model: nn.Module) -> List[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _inputs(model: nn.Module, layers: List[nn.Linear], x: torch.Tensor) -> Dict[int, torch.Tensor]:
    """Each listed layer's input on ``x``, flattened to [examples, features]."""
    seen: Dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].reshape(len(inp[0]), -1)))
        for i, m in enumerate(layers)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def refit(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, ridge: float) -> None:
    """Refit ``pruned``'s Linear layers in place, first to last (see the module doc)."""
    targets = _linears(dense)
    wanted = {i: inp @ m.weight.detach().T + m.bias.detach()
              for (i, inp), m in zip(sorted(_inputs(dense, targets, x).items()), targets)}
    layers = _linears(pruned)
    for i, layer in enumerate(layers):
        inp = _inputs(pruned, layers, x)[i].double()
        a = torch.cat([inp, torch.ones(len(inp), 1, dtype=inp.dtype)], 1)
        gram, rhs = a.T @ a / len(a), a.T @ wanted[i].double() / len(a)
        mask = getattr(layer, "weight_mask", torch.ones_like(layer.weight)).bool()
        weight = getattr(layer, "weight_orig", layer.weight).detach().double().clone()
        bias = layer.bias.detach().double().clone()
        for row in range(weight.shape[0]):
            kept = torch.cat([mask[row], torch.tensor([True])]).nonzero().squeeze(1)
            g = gram[kept][:, kept]
            g = g + ridge * g.diagonal().mean() * torch.eye(len(kept), dtype=g.dtype)
            solved = torch.linalg.solve(g, rhs[kept, row])
            weight[row, kept[:-1]] = solved[:-1]
            bias[row] = solved[-1]
        with torch.no_grad():
            getattr(layer, "weight_orig", layer.weight).copy_(weight.float())
            layer.bias.copy_(bias.float())


def searched_run(args: argparse.Namespace, seed: int, data=None) -> tuple:
    """(data, trained model, its search): one training run with the default search, as
    `bingo compare` trains it (same data order and initial weights), for ``args.model``,
    ``args.optimizer``, ``args.lr`` and ``args.data_dir``; ``data`` reused when given."""
    job = CompareJob(model=args.model, data_dir=args.data_dir, optimizer=args.optimizer,
                     lr=args.lr, methods=["bingo:calibrated"], seed=seed)
    data = data or load_dataset(job.dataset, job.data_dir)
    torch.manual_seed(seed)
    model = build_model(job.model)
    search = job.make_search(model, ["calibrated"])
    train(model, data.train, epochs=job.epochs, batch_size=job.batch_size,
          optimizer=make_optimizer(job.optimizer, model.parameters(), job.lr), seed=seed,
          after_step=search.step, progress=False)
    return data, model, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--sparsities", default="0.9,0.95")
    parser.add_argument("--ridge", type=float, default=1e-3)
    args = parser.parse_args()
    sparsities = [float(s) for s in args.sparsities.split(",")]
    print("| seed | sparsity | dense | calibrated: one-shot | refit | magnitude: one-shot | refit |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    data = None
    for seed in (int(s) for s in args.seeds.split(",")):
        data, model, search = searched_run(args, seed, data)
        x, _ = search.calibration_batch()
        dense = 100 * accuracy(model, data.test)
        for s in sparsities:
            row = [f"{seed}", f"{s:.0%}", f"{dense:.2f}"]
            for estimator in ("calibrated", "magnitude"):
                pruned = copy.deepcopy(model)
                prune(pruned, search.significance(estimator, sparsity=s), sparsity=s)
                row.append(f"{100 * accuracy(pruned, data.test):.2f}")
                refit(model, pruned, x, args.ridge)
                row.append(f"{100 * accuracy(pruned, data.test):.2f}")
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
