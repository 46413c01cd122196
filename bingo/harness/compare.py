"""``bingo compare``: every pruning method on one harness (same data, model, initial
weights, training loop and evaluation), at a grid of sparsities and/or at an accuracy
floor. Writes results.json, results.md (the table) and accuracy_vs_sparsity.png.

How each family meets a sparsity s (test accuracy reported, choices made on validation):

* after training, one shot (``bingo``, ``magnitude``): train once (BINGO with its ticket
  search; magnitude, hybrid, Wanda and SparseGPT share one dense run, BINGO's where it
  came first: a search does not change the training it watches), then prune the trained
  weights to s, optionally refit the kept weights by least squares (``--refit``, on the
  last ``calibration`` examples its training saw: the same images for every method, and
  for BINGO the ones its estimator measured), optionally fine-tune. ``bingo`` scores
  with the job's estimator; ``bingo:<estimator>`` rows score the same training run with
  another (bingo.evidence.estimators), except ``bingo:units``, whose neuron searches need
  a run of their own. A row's seconds include the shared training;
* at initialization (``random``, ``smart-ratio``, ``snip``, ``grasp``, ``synflow``): mask
  the initial weights to s, then train with the mask enforced (one training per s);
* ``hybrid`` (Su et al.): train dense, keep the largest weights within smart-ratio layer
  budgets, retrain from the trained weights at the initial learning rate (rewinding);
* ``imp``: rounds of magnitude pruning with rewinding (bingo.harness.baselines.imp);
* during the one training run (``gmp``, ``gmp-layer``, ``bingo-gradual``): prune on the
  cubic schedule (``gmp_start``, ``gmp_end``, ``gmp_every``) while training, one run per s
  (bingo.harness.baselines.gmp, bingo.pruning.gradual_ticket);
* layer-wise one shot (``wanda``, ``sparsegpt``): the dense model trained once, then each
  layer in forward order pruned on the last ``calibration`` examples its training saw,
  uniform layer sparsity, the last layer dense (bingo.harness.baselines.layerwise).

The runners live in :mod:`bingo.harness.methods`, the shared harness in :mod:`bingo.harness.shared_run`.

At a floor (``min_accuracy``): BINGO and magnitude bisect the sparsity on validation;
IMP prunes round after round until validation accuracy falls below it; the others, which
train once per sparsity, report the largest grid sparsity that stays above it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List

from .compare_job import CompareJob
from .jobs import environment
from .methods import RUNNERS
from .sanity import run_sanity
from .shared_run import Harness, MethodResult


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_compare(job: CompareJob, progress: bool = True,
                log: Callable[[str], None] = _stderr) -> Dict[str, Any]:
    """Run every method of ``job``; returns the JSON-able results."""
    job.validate()
    wall = time.perf_counter()
    h = Harness(job, progress, log)
    results: List[MethodResult] = []
    for i, method in enumerate(job.methods, start=1):
        log(f"[{i}/{len(job.methods)}] {method}")
        result = MethodResult(method)
        start = time.perf_counter()
        RUNNERS[method](h, result)
        result.seconds += time.perf_counter() - start
        results.append(result)
    sanity = []
    if job.sanity:
        for i, method in enumerate(job.methods, start=1):
            log(f"[sanity {i}/{len(job.methods)}] {method} at {job.sanity_sparsity}")
            sanity.append(run_sanity(h, method, job.sanity_sparsity))
    return {"name": job.name, "sanity": sanity, "config": asdict(job) | {"methods": list(job.methods),
                                                      "sparsities": list(job.sparsities)},
            "methods": [asdict(r) for r in results], "total_seconds": time.perf_counter() - wall,
            "calibrations": h.calibrations, "regression": h.regression,
            "environment": environment(job.torch_device) | {"search_backend": h.search_backend}}
