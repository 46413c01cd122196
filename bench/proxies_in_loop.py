"""The search's share of a real training loop: MNIST batches, an Adam step, then
``TicketSearch.step``, for each model, batch size, ``proxy_every``, movement collected
or not, K and ``regression_every``. Reports milliseconds per step of the training step, of
``search.step`` and of ``Proxies.update`` inside it (timed by a
wrapper). On a GPU (``--device cuda``) each phase ends with a synchronize, so its time
includes its kernels, not only their launches. The first ``--warmup`` steps (compiling
kernels, capturing graphs) are not timed.

    python bench/proxies_in_loop.py --data-dir ../shared/data [--device cuda]

``--wall``: instead, what the loop as a whole pays, with no synchronization between
phases (a GPU overlaps them; what one phase leaves in the caches or the launch queue
for the next counts): the median step period of the same loop without a search, with
the default search (K = 0), without movement, and without kept examples
(``calibration=0``: the proxies and the step's bookkeeping alone), over ``--rounds``
interleaved runs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

import bingo
from bingo.harness.data import batches, load_dataset
from bingo.harness.models import build_model

# model, batch, proxy_every, K, regression_every, movement
CASES = [("lenet300", 64, 1, 0, 0, True), ("lenet300", 64, 2, 0, 0, True),
         ("lenet300", 64, 3, 0, 0, True), ("lenet300", 64, 3, 0, 0, False),
         ("lenet300", 256, 1, 0, 0, True), ("paper-mlp", 64, 1, 0, 0, True),
         ("paper-mlp", 64, 2, 0, 0, True), ("paper-mlp", 64, 3, 0, 0, True),
         ("paper-mlp", 64, 3, 0, 0, False), ("paper-mlp", 256, 1, 0, 0, True),
         ("convnet", 64, 1, 0, 0, True), ("convnet", 64, 3, 0, 0, True),
         ("lenet300", 64, 1, 8, 0, True), ("lenet300", 64, 1, 8, 1, True)]


def _model_and_optimizer(model_name: str, device: torch.device):
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _train_step(model, opt, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _loop(data, batch: int, count: int, device: torch.device):
    """(step index, inputs, labels) of the first ``count`` MNIST batches, on ``device``."""
    for i, (x, y) in enumerate(batches(data.train, batch, torch.Generator().manual_seed(0))):
        if i == count:
            return
        yield i, x.to(device), y.to(device)


def run(data, model_name: str, batch: int, every: int, variants: int, regression: int,
        movement: bool, steps: int, device: torch.device, warmup: int) -> dict:
    model, opt = _model_and_optimizer(model_name, device)
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
    train = stepped = 0.0
    n = 0  # timed steps
    for i, x, y in _loop(data, batch, warmup + steps, device):
        sync()
        start = time.perf_counter()
        _train_step(model, opt, x, y)
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


WALL_CONFIGS = {"no search": None, "default": {}, "without movement": {"movement": False},
                "default, calibration=0": {"calibration": 0}}


def wall(data, model_name: str, config, steps: int, device: torch.device,
         warmup: int) -> List[float]:
    """Each timed step's period in milliseconds, from the top of one loop iteration to the
    next (batch 64, Adam; no synchronization in between, so on a GPU this is the steady
    state's period); ``config``: the TicketSearch's keyword arguments, None for no
    search."""
    model, opt = _model_and_optimizer(model_name, device)
    search = None if config is None else bingo.TicketSearch(model, variants=0, **config)
    ticks = []
    for i, x, y in _loop(data, 64, warmup + steps, device):
        if i >= warmup:
            ticks.append(time.perf_counter())
        _train_step(model, opt, x, y)
        if search is not None:
            search.step(x, y)
    ticks.append(time.perf_counter())
    return [1e3 * (b - a) for a, b in zip(ticks, ticks[1:])]


def main_wall(data, args, device: torch.device) -> None:
    """The median step period per configuration, pooled over interleaved rounds (a
    median of periods shrugs off the VM's bursts, which moved whole-run totals by 20%)."""
    names = list(WALL_CONFIGS)
    print("| model | " + " | ".join(f"{n}, ms" for n in names) + " | "
          + " | ".join(f"{n}: share" for n in names[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for model_name in ("lenet300", "paper-mlp", "convnet"):
        periods: Dict[str, List[float]] = {n: [] for n in names}
        for _ in range(args.rounds):
            for n in names:
                periods[n] += wall(data, model_name, WALL_CONFIGS[n], args.steps, device,
                                   args.warmup)
        med = {n: statistics.median(t) for n, t in periods.items()}
        base = med["no search"]
        print(f"| {model_name} | " + " | ".join(f"{med[n]:.3f}" for n in names) + " | "
              + " | ".join(f"{100 * (med[n] - base) / base:.1f}%" for n in names[1:])
              + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=400, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--wall", action="store_true",
                        help="the whole loop's time per step, with and without a search")
    parser.add_argument("--rounds", type=int, default=3, help="--wall: interleaved runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset("mnist", args.data_dir)
    if args.wall:
        return main_wall(data, args, device)
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
