"""bingo: find unimportant weights during one training run (BINGO) and prune them: in one
shot after training, or gradually during it."""
from . import estimators, export
from .dispatch import available_backends, select_backend
from .estimators import ESTIMATORS
from .baselines.gmp import GradualMagnitudePruning
from .gradual import GradualPruning
from .gradual_ticket import GradualTicketPruning
from .pruning import PruneReport, prune
from .refit import RefitReport, prune_and_refit, refit
from .rules import RULES
from .search import SearchRecord, TicketSearch
from .targets import select_targets

__version__ = "0.1.0"
__all__ = ["TicketSearch", "SearchRecord", "prune", "PruneReport", "refit", "prune_and_refit",
           "RefitReport", "GradualPruning", "GradualTicketPruning", "GradualMagnitudePruning",
           "RULES",
           "select_targets", "available_backends", "select_backend", "ESTIMATORS", "estimators",
           "export", "__version__"]
