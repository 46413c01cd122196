"""Each model's training recipe: what ``bingo prune`` / ``bingo compare`` train with when
the command line does not say (a RunSetup field left at None takes its model's value).

* the MNIST nets: Adam 1e-3, batch 64, 3 epochs (the project's main job);
* ``resnet20`` and the CIFAR VGGs (``vgg11``, ``vgg11-w16``; ``CIFAR_CNN``): SGD 0.1 with
  momentum 0.9 and weight decay 5e-4, batch 128, a cosine to 0 over 15 epochs (He et al.'s
  CIFAR recipe, shortened to fit the 2-core CPU), 256 kept images for the measured
  estimators (ResNet-20: 2,048 took 726 s to score, 256 took 33 s: docs/results.md),
  gradual events between magnitude and mag+movement (``GRADUAL_CANDIDATES``);
* ``char-gpt``: AdamW 1e-3 (decoupled weight decay 0.1 on matrices and embeddings, betas 0.9/0.99),
  batch 12 windows of 64 characters, linear warm-up then a cosine to a tenth, 2 epochs
  (2,616 steps; nanoGPT's CPU configuration runs 2,000), 256 kept sequences (16,384
  characters) for the one-shot baselines that read examples (Wanda, SparseGPT), 64 for
  BINGO's own measurements (``SEARCH_CALIBRATION``), and gradual events that choose
  between magnitude and mag+movement only (``GRADUAL_CANDIDATES``).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from ..engine.search import DEFAULT_CALIBRATION

BASE: Dict[str, Any] = dict(epochs=3, batch_size=64, optimizer="adam", lr=1e-3,
                            weight_decay=0.0, lr_schedule="constant",
                            calibration=DEFAULT_CALIBRATION)
CIFAR_CNN: Dict[str, Any] = dict(epochs=15, batch_size=128, optimizer="sgd", lr=0.1,
                                 weight_decay=5e-4, lr_schedule="cosine", calibration=256)
RECIPES: Dict[str, Dict[str, Any]] = {
    "resnet20": CIFAR_CNN, "vgg11": CIFAR_CNN, "vgg11-w16": CIFAR_CNN,
    "char-gpt": dict(epochs=2, batch_size=12, optimizer="adamw", lr=1e-3, weight_decay=0.1,
                     lr_schedule="warmup-cosine", calibration=256),
}


# Kept examples BINGO's own measurements use (the one-shot estimator; the gradual events,
# capped at 512), where the recipe's ``calibration`` (the examples Wanda, SparseGPT and the
# refit read) is not the choice. char-gpt's 64 sequences (4,096 characters): the events'
# losses of 256 at a quarter of their time; the one-shot estimator within 0.0032 of 256's
# validation loss at 50-90% at about a quarter of its time, under 10% of the training run
# (docs/results.md, char-gpt).
SEARCH_CALIBRATION: Dict[str, int] = {"char-gpt": 64}


# The rankings a gradual run's events choose between, where not the pruner's default
# (magnitude, mag+movement, lamp). char-gpt: with lamp the events picked it in 7-15 of 34
# events and the runs ended above `gmp`'s validation loss at 70% on both seeds (+0.0023,
# +0.0013; 2026-12-07); without it they tie `gmp` at 50-70% and are 0.0041 below it at
# 90% (docs/results.md, *LAMP on char-gpt*). resnet20: with lamp, 90% over seeds 0-2 ended
# 0.27 below on validation (85.23 against 85.50) and 0.14 on test (77.50 against 77.64) of
# the runs without it, and below `gmp` on both (docs/results.md, *ResNet-20 at 90%, three
# seeds with lamp*).
# The VGGs take resnet20's set (the same data, recipe and BatchNorm convolutions); lamp
# added on vgg11-w16, one seed, was lower on validation at both sparsities (docs/results.md,
# *A CIFAR VGG*).
WITHOUT_LAMP: Tuple[str, ...] = ("magnitude", "mag+movement")
GRADUAL_CANDIDATES: Dict[str, Tuple[str, ...]] = {
    "char-gpt": WITHOUT_LAMP, "resnet20": WITHOUT_LAMP,
    "vgg11": WITHOUT_LAMP, "vgg11-w16": WITHOUT_LAMP}


def gradual_candidates(model: str) -> Tuple[str, ...]:
    """The default candidates of ``model``'s gradual events: its entry above, else the
    pruner's (``GradualTicketPruning``'s ``DEFAULT_CANDIDATES``)."""
    from ..pruning.gradual_ticket import DEFAULT_CANDIDATES
    return GRADUAL_CANDIDATES.get(model, DEFAULT_CANDIDATES)


def search_calibration(model: str) -> int:
    """The default kept examples of ``model``'s search (its one-shot estimator): its entry
    above, else its recipe's ``calibration``."""
    return SEARCH_CALIBRATION.get(model, recipe(model)["calibration"])


def gradual_calibration(model: str) -> int:
    """The default kept examples of ``model``'s gradual events: its search's, capped at the
    pruner's default (512)."""
    from ..pruning.gradual_ticket import DEFAULT_EVENT_EXAMPLES
    return min(search_calibration(model), DEFAULT_EVENT_EXAMPLES)


def recipe(model: str) -> Dict[str, Any]:
    """The training defaults of ``model`` (the MNIST nets' for any model not listed)."""
    return {**BASE, **RECIPES.get(model, {})}


def describe() -> str:
    """One line per recipe, for ``--help``."""
    def line(name: str, r: Dict[str, Any]) -> str:
        own = f" (BINGO's {search_calibration(name)})" if name in SEARCH_CALIBRATION else ""
        return (f"{name}: {r['optimizer']} {r['lr']:g}, weight decay {r['weight_decay']:g}, "
                f"{r['lr_schedule']}, batch {r['batch_size']}, {r['epochs']} epochs, "
                f"calibration {r['calibration']}{own}")
    return "; ".join([line("mnist nets", BASE)]
                     + [line(m, recipe(m)) for m in RECIPES])
