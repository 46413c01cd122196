"""The pruning methods BINGO is compared with, on the same harness (bingo.harness.compare):

* :mod:`.scores`  per-weight importance of the classic criteria: magnitude, random,
                  SNIP, GraSP, SynFlow (higher = keep, as everywhere in bingo);
* :mod:`.budgets` per-layer sparsities: the 'smart ratio' of Su et al. (2020);
* :mod:`.imp`     iterative magnitude pruning with rewinding (Frankle & Carbin).

Masks go through :func:`bingo.prune` (torch.nn.utils.prune), and training through
:func:`bingo.harness.training.train`, like BINGO itself.
"""
from .budgets import smart_ratio
from .imp import IMPRound, imp
from .scores import (
           grasp_scores,
           magnitude_scores,
           random_scores,
           snip_scores,
           synflow_scores,
)

__all__ = ["smart_ratio", "imp", "IMPRound", "magnitude_scores", "random_scores",
           "snip_scores", "grasp_scores", "synflow_scores"]
