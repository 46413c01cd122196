"""One-shot options on one trained network (issue 22): train ``--model`` once by its
recipe with BINGO's search keeping ``--keep`` examples, save it, then prune copies of it
at each ``--sparsity`` by each ``--options`` entry and report test / validation accuracy:

* ``magnitude@N``: global |w|; ``act@N``: the ``activation`` candidate alone;
  ``cal@N``: the calibrated estimator measured on the last N kept examples;
* ``+refit``: then ``bingo.refit`` on those N examples (with their labels);
* BatchNorm statistics re-estimated on the N examples after the cut, except where an
  option ends in ``raw`` (``magnitude@1024+refitraw``: the dense statistics kept).

    python experiments/one_shot_options.py --data-dir ../shared/data --model resnet20 \
        --dataset cifar10 --seed 0 --keep 1024 --checkpoint /tmp/r20_s0.pt \
        --sparsity 0.9,0.95 --options magnitude@1024,cal@256,magnitude@1024+refitraw

A checkpoint that exists is loaded instead of training again.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from bingo import prune
from bingo.engine.calibration import CalibrationBuffer
from bingo.harness.baselines.scores import magnitude_scores
from bingo.harness.compare_job import CompareJob
from bingo.harness.shared_run import Harness
from bingo.pruning.batchnorm import recalibrate_batchnorm
from bingo.pruning.refit import refit


def _last(x: torch.Tensor, y: torch.Tensor, n: int, batch: int) -> CalibrationBuffer:
    buf = CalibrationBuffer(n)
    for i in range(0, len(x), batch):
        buf.add(x[i:i + batch], y[i:i + batch])
    return buf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=int, default=1024)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--sparsity", default="0.9")
    ap.add_argument("--options", default="magnitude@256,cal@256")
    a = ap.parse_args()
    job = CompareJob(data_dir=a.data_dir, model=a.model, dataset=a.dataset, seed=a.seed,
                     calibration=a.keep, methods=("bingo",), sparsities=(0.9,))
    h = Harness(job, False, print)
    model = h.fresh()
    search = job.make_search(model)
    if Path(a.checkpoint).exists():
        saved = torch.load(a.checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        search.load_state_dict(saved["search"])
    else:
        start = time.perf_counter()
        h.train(model, after_step=search.step)
        print(f"trained in {time.perf_counter() - start:.1f} s")
        torch.save({"model": model.state_dict(), "search": search.state_dict()}, a.checkpoint)
    x, y = search.calibration_batch()
    print(f"dense: test {h.test(model):.4f} val {h.val(model):.4f} {h.exact(model)}; "
          f"{len(x)} kept")
    full = search._calibration
    for s in (float(v) for v in a.sparsity.split(",")):
        for option in a.options.split(","):
            kind, _, rest = option.partition("@")
            n = int(rest.split("+")[0])
            search._calibration = _last(x, y, n, job.batch_size)
            kx, ky = search.calibration_batch()
            start = time.perf_counter()
            if kind == "magnitude":
                scores = magnitude_scores(model)
            elif kind == "act":
                scores = search.significance("activation")
            else:
                scores = search.significance("calibrated", sparsity=s)
                c = search.last_calibration
                print(f"  {option}: chose {c.chosen}, "
                      f"losses { {k: round(v, 4) for k, v in c.losses.items()} }")
            m = copy.deepcopy(model)
            prune(m, scores, sparsity=s)
            if "+refit" in option:
                fit = refit(m, model, kx, labels=ky)
                print(f"  refit: kept-example loss {fit.loss_before:.4f} -> "
                      f"{fit.loss_after:.4f} (kept: {fit.kept})")
            if not option.endswith("raw"):
                recalibrate_batchnorm(m, kx)
            print(f"{option:28s} {s}: test {h.test(m):.4f} val {h.val(m):.4f} "
                  f"{h.exact(m)} ({time.perf_counter() - start:.1f} s)", flush=True)
            search._calibration = full


if __name__ == "__main__":
    main()
