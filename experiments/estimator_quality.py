"""Estimator quality: rank correlation of each estimator with exact single-weight and
single-neuron removal effects, computed exhaustively on a small network.

An MLP 784-16-10 (12,704 weights) is trained on MNIST for one epoch (Adam 1e-3, batch 64)
with two searches riding along: one at weight granularity (rule "paper", reset to zero,
feeding the regression at every step) and one at neuron granularity (rule "contrast", reset to zero). Afterwards, on 2,048
validation images, the loss increase of removing each single weight (and each hidden
unit: its row and bias) is computed exactly, and each estimator's scores are compared
with it by Spearman's rank correlation (1 = the same order).

    python experiments/estimator_quality.py --data-dir ../shared/data
"""
import argparse
import json

import torch
import torch.nn.functional as F

import bingo
from bingo.evidence.estimators import ESTIMATORS
from bingo.harness.data import batches, load_dataset
from bingo.harness.models import mlp


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    def ranks(v):
        r = torch.empty_like(v, dtype=torch.float64)
        r[torch.argsort(v.double())] = torch.arange(v.numel(), dtype=torch.float64)
        return r
    ra, rb = ranks(a.flatten()), ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


@torch.no_grad()
def exact_changes(model, x, y):
    """Loss increase when each single weight of fc1/fc2, and each hidden unit, is zeroed."""
    fc1, fc2 = model.fc1, model.fc2
    x = x.flatten(1)
    z = fc1(x)
    a = z.relu()
    logits = fc2(a)
    base = F.cross_entropy(logits, y)
    d1 = torch.empty_like(fc1.weight)
    for i in range(fc1.out_features):  # all 784 inputs of unit i at once: [B, 784]
        a_new = (z[:, i:i + 1] - fc1.weight[i] * x).relu()
        out = logits.unsqueeze(1) + (a_new - a[:, i:i + 1]).unsqueeze(2) * fc2.weight[:, i]
        loss = F.cross_entropy(out.reshape(-1, 10), y.repeat_interleave(x.shape[1]),
                               reduction="none").view(len(y), -1).mean(0)
        d1[i] = loss - base
    d2 = torch.empty_like(fc2.weight)
    for k in range(fc2.out_features):
        out = logits.unsqueeze(1).repeat(1, fc2.in_features, 1)
        out[:, :, k] -= fc2.weight[k] * a
        d2[k] = F.cross_entropy(out.reshape(-1, 10), y.repeat_interleave(fc2.in_features),
                                reduction="none").view(len(y), -1).mean(0) - base
    units = torch.empty(fc1.out_features)
    for i in range(fc1.out_features):
        out = logits - a[:, i:i + 1] * fc2.weight[:, i]
        units[i] = F.cross_entropy(out, y) - base
    return {"fc1.weight": d1, "fc2.weight": d2}, units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_dir)
    torch.manual_seed(args.seed)
    model = mlp([784, 16, 10])
    # proxies from every step (not the library's every 3rd): the table compares orderings
    # with all the gradient information a run has
    weights = bingo.TicketSearch(model, fraction=0.05, variants=8, rule="paper",
                                 reset_to="zero", seed=args.seed, regression_every=1,
                                 proxy_every=1)
    units = bingo.TicketSearch(model, fraction=0.1, variants=8, rule="contrast",
                               granularity="neuron", reset_to="zero", seed=args.seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches(data.train, 64, torch.Generator().manual_seed(args.seed)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        weights.step(x, y)
        units.step(x, y)
    x, y = data.val.images[:2048], data.val.labels[:2048]
    exact, exact_units = exact_changes(model, x, y)
    rows = {}
    for name in ESTIMATORS:
        if name == "units":
            continue
        scores = weights.significance(name, sparsity=0.9)
        rows[name] = {layer: spearman(scores[layer], exact[layer]) for layer in exact}
        allw = torch.cat([scores[k].flatten() for k in exact])
        rows[name]["all"] = spearman(allw, torch.cat([exact[k].flatten() for k in exact]))
    unit_rows = {
        "neuron search (contrast, zero)": spearman(units.unit_significance()["fc1.weight"],
                                                   exact_units),
        "row L2 norm": spearman(model.fc1.weight.detach().norm(dim=1), exact_units),
        "outgoing L2 norm": spearman(model.fc2.weight.detach().norm(dim=0), exact_units),
    }
    lines = ["| estimator | fc1 (12,544) | fc2 (160) | all weights |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {r['fc1.weight']:+.3f} | {r['fc2.weight']:+.3f} | {r['all']:+.3f} |"
              for n, r in rows.items()]
    lines += ["", "| unit estimator (16 hidden units) | Spearman |", "|---|---:|"]
    lines += [f"| {n} | {v:+.3f} |" for n, v in unit_rows.items()]
    control = control_variate_noise(weights, exact)
    lines += ["", "| the searches as a per-weight estimate, after the regression's control "
              "variate | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.3g} |" for k, v in control.items()]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"weights": rows, "units": unit_rows, "control_variate": control}, f,
                      indent=2)


def control_variate_noise(search, exact) -> dict:
    """How well could the searches estimate single weights even with the regression's
    prediction subtracted from each measured damage (a control variate)? The residual
    spread of one search, divided by the square root of the searches that reset a given
    weight, is the standard error of that weight's estimate; compare it with the size of
    the exact single-weight effects."""
    reg = search.regression
    dof = reg.observations - reg.steps  # each step's mean is removed
    spread = (reg.damage_ss / dof) ** 0.5
    residual = ((1.0 - reg.explained()) * reg.damage_ss / dof) ** 0.5
    per_weight = reg.observations * search.effective_fraction
    effects = torch.cat([e.flatten().abs() for e in exact.values()])
    return {
        "within-step spread of a search's damage (loss)": spread,
        "share of it the regression explains (R²)": reg.explained(),
        "residual spread": residual,
        "searches resetting each weight": per_weight,
        "standard error of a weight's mean residual": residual / per_weight ** 0.5,
        "exact single-weight effect, median of abs(Δloss)": float(effects.median()),
        "exact single-weight effect, 99th percentile of abs(Δloss)": float(
            torch.quantile(effects, 0.99)),
    }


if __name__ == "__main__":
    main()
