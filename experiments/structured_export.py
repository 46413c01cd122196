"""Structured export: remove whole hidden units by neuron-search scores, export a
physically smaller LeNet-300-100, and measure it.

Trains LeNet-300-100 (3 epochs, Adam 1e-3, batch 64) with a neuron-granularity search
(rule "contrast", units reset to zero, K = 8, 10% of units per subset). For each share of
hidden units removed (the lowest-scoring ones; the same share by the rows' L2 norm as
the baseline), it reports test accuracy without retraining, the exported model's
parameter count, the largest output difference from the masked model on the test set,
and the median forward time of both at batch 1024 on this machine.

    python experiments/structured_export.py --data-dir ../shared/data
"""
import argparse
import copy

import torch
import torch.nn.functional as F

import bingo
from bingo.evidence.estimators import surviving_units
from bingo.harness.data import batches, load_dataset
from bingo.harness.models import lenet300
from bingo.harness.training import accuracy
from bingo.pruning.export import inference_seconds, shrink
from bingo.pruning.masks import apply_masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shares", default="0.5,0.75,0.9")
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_dir)
    torch.manual_seed(0)
    model = lenet300()
    search = bingo.TicketSearch(model, fraction=0.1, variants=8, granularity="neuron",
                                rule="contrast", reset_to="zero")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        for x, y in batches(data.train, 64, gen):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            search.step(x, y)
    dense = accuracy(model, data.test)
    x = data.test.images[:1024]
    dense_s = inference_seconds(model, x, repeats=50)
    norms = {t.name: dict(model.named_parameters())[t.name].detach().norm(dim=1)
             for t in search.targets}
    print(f"dense: test {100 * dense:.2f}%, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, forward {1e3 * dense_s:.2f} ms at batch 1024\n")
    print("| units removed | ranking | test acc (no retraining) | parameters | max |Δ output| "
          "| forward (ms) | speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for share in (float(s) for s in args.shares.split(",")):
        for label, unit_scores in (("neuron search", search.unit_significance()),
                                   ("row L2 norm", norms)):
            masked = copy.deepcopy(model)
            apply_masks(masked, surviving_units(search, unit_scores, share))
            acc = accuracy(masked, data.test)
            small, report = shrink(masked)
            with torch.no_grad():
                diff = float((small.eval()(data.test.images) -
                              masked.eval()(data.test.images)).abs().max())
            masked_s = inference_seconds(masked, x, repeats=50)
            small_s = inference_seconds(small, x, repeats=50)
            print(f"| {share:.0%} | {label} | {100 * acc:.2f}% | {report.params_after:,} | "
                  f"{diff:.1e} | {1e3 * masked_s:.2f} → {1e3 * small_s:.2f} | "
                  f"{masked_s / small_s:.1f}× |")


if __name__ == "__main__":
    main()
