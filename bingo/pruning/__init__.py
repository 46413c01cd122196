"""Acting on the scores: masks and the zeros really there (``masks``: ``prune``,
``PruneReport``), the least-squares refit (``refit``), pruning during training
(``schedule``, ``gradual``, ``gradual_ticket``) and dense export (``export``)."""
from .masks import PruneReport, apply_masks, copy_model, current_masks, prune

__all__ = ["PruneReport", "apply_masks", "copy_model", "current_masks", "prune"]
