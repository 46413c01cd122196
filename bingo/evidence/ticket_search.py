"""``TicketSearch``: the search engine (:class:`~bingo.engine.search.SearchEngine`) with
its evidence turned into scores by name (``significance``). The engine knows nothing of
the estimators; they read the engine, and this class joins the two for the user."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..engine.search import SearchEngine
from .estimators import estimate


class TicketSearch(SearchEngine):
    __doc__ = SearchEngine.__doc__

    def significance(self, estimator: str = "calibrated", *, sparsity: Optional[float] = None,
                     refit: bool = False) -> Dict[str, torch.Tensor]:
        """{parameter name: score} with each parameter's shape; higher = more important.

        ``estimator`` names how searches and proxies become scores (see
        :mod:`bingo.evidence.estimators`; "search" is the rule's scores alone). The calibrated
        estimator (the default) chooses its proxy and layer budgets for the sparsity you
        will prune to: pass it (default 0.9). With ``refit=True`` it chooses the mask best
        after ``bingo.refit`` (pass it when you will refit the pruned model).
        """
        if self.ranks.active:  # DDP averaged the gradients: the same sums on every rank
            self.ranks.agree("the gradient proxies",
                             [v for sums in self.proxies.sums for v in sums.values()]
                             + [s for state in self.rule_state.whole() for s in state.values()],
                             "every rank's gradients must be the same after backward: wrap "
                             "the model in DistributedDataParallel")
        return estimate(self, estimator, sparsity=sparsity, refit=refit)
