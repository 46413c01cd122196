"""The sanity checks of Su et al. (2020), 'Sanity-checking pruning methods: random tickets
can win the jackpot', for any method of bingo.harness.compare, BINGO included.

Protocol: a method chooses keep-masks at one sparsity; the *ticket* (those masks on the
initial weights) is trained with the masks enforced and tested. Each check perturbs one
thing and reports the test accuracy change against the unperturbed ticket:

* ``random-labels``: the data the method prunes with has its labels shuffled (for BINGO,
  only what the ticket search sees; training keeps the true labels);
* ``random-pixels``: the same data has each image's pixels shuffled;
* ``rearrange``: the mask's positions are permuted within each layer (same count);
* ``shuffle-weights``: the kept initial values are permuted within each layer;
* ``reinit``: the kept weights get a fresh initialization (another seed).

A method that really uses the data loses accuracy under the first two; one whose mask
positions or kept values matter loses under the next ones. Data-free methods (random,
smart-ratio, SynFlow) skip the data checks.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..pruning.masks import apply_masks
from .data import Split
from .methods import DATA_FREE, find_masks

CHECKS = ("random-labels", "random-pixels", "rearrange", "shuffle-weights", "reinit")
Masks = Dict[str, torch.Tensor]


def shuffle_labels(x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same images with their labels permuted (the label counts are kept)."""
    return x, y[torch.randperm(len(y), generator=generator)]


def shuffle_pixels(x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each image's pixels permuted independently (its pixel values are kept)."""
    flat = x.reshape(len(x), -1)
    order = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1).to(flat.device)
    return torch.gather(flat, 1, order).view_as(x), y


CORRUPTIONS = {"random-labels": shuffle_labels, "random-pixels": shuffle_pixels}


def corrupt_split(split: Split, check: str, seed: int) -> Split:
    x, y = CORRUPTIONS[check](split.images, split.labels, torch.Generator().manual_seed(seed))
    return Split(x, y)


def rearrange(masks: Mapping[str, torch.Tensor], generator: torch.Generator) -> Masks:
    """Each layer's mask with its positions permuted: the same number kept per layer."""
    out = {}
    for name, m in masks.items():
        flat = m.flatten()
        out[name] = flat[torch.randperm(flat.numel(), generator=generator)].view_as(m)
    return out


def shuffle_kept(model: nn.Module, masks: Mapping[str, torch.Tensor],
                 generator: torch.Generator) -> None:
    """Permute, in place, the values at each layer's kept positions among themselves."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            w = params[name].view(-1)
            kept = m.flatten().nonzero().squeeze(1)
            w[kept] = w[kept[torch.randperm(kept.numel(), generator=generator)]]


def run_sanity(h, method: str, sparsity: float,
               checks: Sequence[str] = CHECKS) -> Dict[str, Any]:
    """The checks for one method on harness ``h`` (a bingo.harness.compare harness)."""

    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown sanity checks {unknown}; choose from {CHECKS}")
    seed = h.job.seed
    masks = find_masks(h, method, sparsity)
    base = ticket_accuracy(h, masks)
    h.log(f"  sanity {method}: ticket at {sparsity:.2f} -> test {base:.4f}")
    out: Dict[str, Any] = {"method": method, "sparsity": sparsity, "test_accuracy": base,
                           "checks": {}}
    for check in checks:
        gen = torch.Generator().manual_seed(seed + 7919)
        if check in CORRUPTIONS:
            if method in DATA_FREE:
                out["checks"][check] = None  # nothing to corrupt
                continue
            if method == "bingo" or method.startswith("bingo:"):  # the search's data only
                corrupt = CORRUPTIONS[check]
                other = find_masks(h, method, sparsity,
                                   search_data=lambda x, y, c=corrupt, g=gen: c(x, y, g))
            else:
                other = find_masks(h.with_train(corrupt_split(h.train_split, check, seed + 1)),
                                   method, sparsity)
            acc = ticket_accuracy(h, other)
        elif check == "rearrange":
            acc = ticket_accuracy(h, rearrange(masks, gen))
        elif check == "shuffle-weights":
            acc = ticket_accuracy(h, masks, shuffle=gen)
        else:  # reinit
            acc = ticket_accuracy(h, masks, seed=seed + 1000)
        out["checks"][check] = {"test_accuracy": acc, "change": acc - base}
        h.log(f"  sanity {method}: {check} -> test {acc:.4f} ({acc - base:+.4f})")
    return out


def ticket_accuracy(h, masks: Mapping[str, torch.Tensor], seed: Optional[int] = None,
                    shuffle: Optional[torch.Generator] = None) -> float:
    """Train the initial weights (of ``seed``) under ``masks``; test accuracy."""
    model = h.fresh(seed)
    if shuffle is not None:
        shuffle_kept(model, masks, shuffle)
    apply_masks(model, masks)
    h.train(model, description="train ticket")
    return h.test(model)
