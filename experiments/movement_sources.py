"""Where the movement proxy could come from more cheaply than every step's gradient.

Movement (-Σ g w over every step) is the one proxy that cannot be sampled: from every
3rd step's gradient it prunes at chance (docs/results.md), so on the steps between full
proxy updates it still costs a DRAM pass (16 bytes a weight). This experiment, one
training run per (model, optimizer), prunes one-shot without retraining by:

* ``magnitude`` and ``movement`` (the library's proxy, every step's gradient);
* ``growth`` |w| - |w0| and ``w(w-w0)``: end-of-training scores, free per step (under
  plain SGD the movement sum telescopes to about (w² - w0²)/2lr);
* ``momentum/k``: -k Σ b_t w_t over every k-th step, b the optimizer's own low-passed
  gradient (Adam's exp_avg, SGD's momentum buffer), whose noise is already averaged
  over ~1/(1-β) steps, so that sampling it might not break the sum.

    python experiments/movement_sources.py --data-dir ../shared/data
"""
import argparse
import copy

import torch

import bingo
from bingo.harness.data import load_dataset
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, train
from bingo.pruning.masks import prune

EVERY = (1, 3, 6, 10)
SPARSITIES = (0.9, 0.95)
LR = {"adam": 1e-3, "sgd": 0.05}


def run(data, model_name: str, optimizer: str, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(model_name)
    search = bingo.TicketSearch(model, variants=0, proxy_every=1, seed=seed)
    opt = make_optimizer(optimizer, model.parameters(), LR[optimizer])
    params = dict(model.named_parameters())
    names = [t.name for t in search.targets]
    initial = {n: params[n].detach().clone() for n in names}
    momentum = {k: {n: torch.zeros_like(params[n]) for n in names} for k in EVERY}
    step = [0]

    def after_step(x, y):
        search.step(x, y)
        for k in EVERY:
            if step[0] % k == 0:
                for n in names:
                    state = opt.state[params[n]]
                    b = state["exp_avg"] if "exp_avg" in state else state["momentum_buffer"]
                    momentum[k][n] -= k * b * params[n].detach()
        step[0] += 1

    train(model, data.train, epochs=epochs, batch_size=64, optimizer=opt, seed=seed,
          after_step=after_step, progress=False)
    w = {n: params[n].detach() for n in names}
    scores = {"magnitude": {n: w[n].abs() for n in names},
              "movement": {n: search.proxies.columns["movement"][i]
                           for i, n in enumerate(names)},
              "growth": {n: w[n].abs() - initial[n].abs() for n in names},
              "w(w-w0)": {n: w[n] * (w[n] - initial[n]) for n in names}}
    scores.update({f"momentum/{k}": momentum[k] for k in EVERY})
    out = {}
    for s in SPARSITIES:
        for method, sc in scores.items():
            pruned = copy.deepcopy(model)
            prune(pruned, sc, sparsity=s)
            out[(s, method)] = accuracy(pruned, data.test)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default="lenet300,paper-mlp,convnet")
    parser.add_argument("--optimizers", default="adam")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_dir)
    methods = ["magnitude", "movement", "growth", "w(w-w0)", *[f"momentum/{k}" for k in EVERY]]
    print("| cell | sparsity | " + " | ".join(methods) + " |")
    print("|---|---:|" + "---:|" * len(methods))
    for model_name in args.models.split(","):
        for optimizer in args.optimizers.split(","):
            acc = run(data, model_name, optimizer, args.epochs, args.seed)
            for s in SPARSITIES:
                print(f"| {model_name}_{optimizer} | {s:.0%} | " +
                      " | ".join(f"{100 * acc[(s, m)]:.2f}" for m in methods) + " |", flush=True)


if __name__ == "__main__":
    main()
