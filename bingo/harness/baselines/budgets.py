"""Per-layer budgets: how much of each layer a method keeps."""
from __future__ import annotations

from typing import Sequence


def smart_ratio(sizes: Sequence[int], sparsity: float, last_keep: float = 0.3) -> list[float]:
    """Keep ratios of Su et al. (2020), 'Sanity-checking pruning methods', for layers of
    ``sizes`` weights (input side first) at overall ``sparsity``.

    Layer l of L (1-based) keeps a ratio proportional to (L - l + 1)^2 + (L - l + 1), so
    early layers keep more; the final (linear) layer keeps ``last_keep`` (30%). The
    proportionality constant is chosen so the kept weights total (1 - sparsity) of all;
    a ratio above 1 is clipped to 1 and its surplus passed on to the other layers.
    Returns keep ratios (1 - layer sparsity) in layer order.
    """
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must lie in (0, 1), got {sparsity}")
    if len(sizes) < 2:
        raise ValueError("smart ratio needs at least two prunable layers (the last keeps 30%)")
    total = sum(sizes)
    budget = (1.0 - sparsity) * total
    L = len(sizes)
    ratio = [0.0] * L
    ratio[-1] = min(last_keep, budget / sizes[-1])
    free = list(range(L - 1))
    left = budget - ratio[-1] * sizes[-1]
    shape = {l: (L - l) ** 2 + (L - l) for l in free}  # l is 0-based: (L - (l+1) + 1) = L - l
    while free:
        scale = left / sum(shape[l] * sizes[l] for l in free)
        over = [l for l in free if shape[l] * scale >= 1.0]
        if not over:
            for l in free:
                ratio[l] = shape[l] * scale
            break
        for l in over:  # clip at 1, hand the surplus to the rest
            ratio[l] = 1.0
            left -= sizes[l]
            free.remove(l)
    return ratio

