"""The search's share of a real training loop: MNIST batches, an Adam step, then
``TicketSearch.step``, for each model, batch size, ``proxy_every``, movement collected
or not, K and ``regression_every``. Reports milliseconds per step of the training step, of
``search.step`` and of ``Proxies.update`` inside it (timed by a
wrapper). On a GPU (``--device cuda``) each phase ends with a synchronize, so its time
includes its kernels, not only their launches. The first ``--warmup`` steps (compiling
kernels, capturing graphs) are not timed.

    python bench/proxies_in_loop.py --data-dir ../shared/data [--device cuda]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import bingo
from bingo.data import batches, load_dataset
from bingo.models import build_model

# model, batch, proxy_every, K, regression_every, movement
CASES = [("lenet300", 64, 1, 0, 0, True), ("lenet300", 64, 2, 0, 0, True),
         ("lenet300", 64, 3, 0, 0, True), ("lenet300", 64, 3, 0, 0, False),
         ("lenet300", 256, 1, 0, 0, True), ("paper-mlp", 64, 1, 0, 0, True),
         ("paper-mlp", 64, 2, 0, 0, True), ("paper-mlp", 64, 3, 0, 0, True),
         ("paper-mlp", 64, 3, 0, 0, False), ("paper-mlp", 256, 1, 0, 0, True),
         ("convnet", 64, 1, 0, 0, True), ("convnet", 64, 3, 0, 0, True),
         ("lenet300", 64, 1, 8, 0, True), ("lenet300", 64, 1, 8, 1, True)]


def run(data, model_name: str, batch: int, every: int, variants: int, regression: int,
        movement: bool, steps: int, device: torch.device, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    search = bingo.TicketSearch(model, variants=variants, proxy_every=every,
                                regression_every=regression, movement=movement)
    spent = {"proxies": 0.0}
    update = search.proxies.update

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = update(*args, **kwargs)
        sync()
        if search.step_count >= warmup:
            spent["proxies"] += time.perf_counter() - start
        return out
    search.proxies.update = timed
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = stepped = 0.0
    n = 0  # timed steps
    for i, (x, y) in enumerate(batches(data.train, batch, torch.Generator().manual_seed(0))):
        if i == warmup + steps:
            break
        x, y = x.to(device), y.to(device)
        sync()
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
        trained = time.perf_counter() - start
        start = time.perf_counter()
        search.step(x, y)
        sync()
        if i >= warmup:
            train += trained
            stepped += time.perf_counter() - start
            n += 1
    return {"train": 1e3 * train / n, "step": 1e3 * stepped / n,
            "proxies": 1e3 * spent["proxies"] / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=400, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset("mnist", args.data_dir)
    print("| model | batch | proxy_every | movement | K | regression_every | "
          "training step, ms | `search.step`, ms | share | proxies, ms | share |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for model_name, batch, every, variants, regression, movement in CASES:
        r = run(data, model_name, batch, every, variants, regression, movement, args.steps,
              device, args.warmup)
        print(f"| {model_name} | {batch} | {every} | {'yes' if movement else 'no'} | "
              f"{variants} | {regression} | "
              f"{r['train']:.2f} | {r['step']:.3f} | "
              f"{100 * r['step'] / r['train']:.1f}% | {r['proxies']:.3f} | "
              f"{100 * r['proxies'] / r['train']:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
