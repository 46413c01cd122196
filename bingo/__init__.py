"""bingo: find unimportant weights during one training run (BINGO) and prune them: in one
shot after training, or gradually during it."""
from .engine.dispatch import available_backends, select_backend
from .engine.rules import RULES
from .engine.search_state import SearchRecord
from .engine.targets import select_targets
from .evidence import estimators
from .evidence.estimators import ESTIMATORS
from .evidence.ticket_search import TicketSearch
from .harness.baselines.gmp import GradualMagnitudePruning
from .pruning import export
from .pruning.batchnorm import recalibrate_batchnorm
from .pruning.gradual import GradualPruning
from .pruning.gradual_ticket import GradualTicketPruning
from .pruning.masks import PruneReport, prune
from .pruning.refit import RefitReport, prune_and_refit, refit

__version__ = "0.1.0"
__all__ = ["TicketSearch", "SearchRecord", "prune", "PruneReport", "refit", "prune_and_refit",
           "recalibrate_batchnorm",
           "RefitReport", "GradualPruning", "GradualTicketPruning", "GradualMagnitudePruning",
           "RULES",
           "select_targets", "available_backends", "select_backend", "ESTIMATORS", "estimators",
           "export", "__version__"]
