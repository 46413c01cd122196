"""One-shot layer-wise pruners of a trained model from a few examples, as their papers do
it: the target layers in forward order, each on its inputs in the network whose earlier
layers are already pruned, each to the same sparsity, the last layer kept dense (when the
goal allows it).

* ``wanda`` (Sun et al. 2023): score |W_ij| * ||X_j||_2, the weight times the norm of its
  input over the examples; each output row loses its lowest scores, no weight update.
* ``sparsegpt`` (Frantar & Alistarh 2023): the OBS update in column blocks. With
  H = XᵀX + λI (λ = 1% of its mean diagonal) and U the upper Cholesky factor of H⁻¹, each
  block of ``block`` columns prunes its weights of lowest w² / U_jj², then column by
  column the pruned weights' error (w - q) / U_jj is spread over the columns to its right
  (``W[:, j:] -= err ⊗ U[j, j:]``).

Both return the PruneReport of the zeros really there; masks through torch.nn.utils.prune.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ...engine.targets import refresh_masked_reads, select_targets
from ...pruning.masks import PruneReport
from ...pruning.refit import REFIT_TYPES, capture, forward_order, input_rows

DAMPING = 0.01  # λ as a share of H's mean diagonal (SparseGPT's default)
BLOCK = 128     # SparseGPT's column block


def uniform_budgets(model: nn.Module, sparsity: float, last_dense: bool = True
                    ) -> Dict[str, float]:
    """Every target at the same sparsity; with ``last_dense``, the last target at 0 and the
    others at what keeps the total at ``sparsity`` (all alike if that would exceed 1)."""
    targets = select_targets(model)
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} is not a fraction in (0, 1)")
    total = sum(t.size for t in targets)
    rest = total - targets[-1].size
    if last_dense and len(targets) > 1 and sparsity * total <= rest:
        return {**{t.name: sparsity * total / rest for t in targets[:-1]}, targets[-1].name: 0.0}
    return {t.name: sparsity for t in targets}


def _layers(model: nn.Module, budgets: Dict[str, float], examples: torch.Tensor):
    """(module name, module, sparsity) of each budgeted Linear/Conv2d weight, in forward
    order; refuses anything else."""
    modules = {}
    for name in budgets:
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if attr != "weight" or not isinstance(module, REFIT_TYPES):
            raise ValueError(f"{name!r} is not the weight of a Linear or Conv2d, which these "
                             f"layer-wise pruners handle")
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(f"{name!r} is a grouped Conv2d, which they do not handle")
        modules[module_name] = (module, budgets[name])
    order = forward_order(model, list(modules), examples[:1],
                          "each pruned layer must run on the examples")
    return [(n, *modules[n]) for n in order]


def _row_counts(rows: int, cols: int, sparsity: float) -> torch.Tensor:
    """How many weights each row loses, so that the layer loses round(sparsity * n)."""
    ends = torch.tensor([round(sparsity * cols * (r + 1)) for r in range(rows)])
    return ends - torch.cat([torch.zeros(1, dtype=ends.dtype), ends[:-1]])


def _install(module: nn.Module, weight: torch.Tensor, keep: torch.Tensor) -> None:
    with torch.no_grad():
        storage = getattr(module, "weight_orig", module.weight)
        storage.copy_(weight.view_as(storage).to(storage.dtype) * keep.view_as(storage))
    torch_prune.custom_from_mask(module, "weight", keep.view_as(storage))


def _inputs(model: nn.Module, module: nn.Module, examples: torch.Tensor, batch: int = 512
            ) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([input_rows(module, capture(model, module, examples[i:i + batch],
                                                     "input"))
                          for i in range(0, len(examples), batch)]).double()


def _report(model: nn.Module, names: Sequence[str]) -> PruneReport:
    refresh_masked_reads(model)  # the masks just installed, on attention's out_proj too
    return PruneReport(sparsity=0.0, layers={}).recount(model, names)


def wanda(model: nn.Module, examples: torch.Tensor, sparsity: float,
          budgets: Optional[Dict[str, float]] = None) -> PruneReport:
    """Prune ``model`` in place by Wanda to ``sparsity`` (``budgets``: {name: sparsity},
    default :func:`uniform_budgets`), on ``examples`` (inputs only)."""
    budgets = uniform_budgets(model, sparsity) if budgets is None else budgets
    for _, module, s in _layers(model, budgets, examples):
        w = getattr(module, "weight").detach().reshape(module.weight.shape[0], -1).double()
        norms = _inputs(model, module, examples).norm(dim=0)
        score = w.abs() * norms[None, :]
        keep = torch.ones_like(w, dtype=torch.bool)
        for r, k in enumerate(_row_counts(*w.shape, s).tolist()):
            keep[r, torch.sort(score[r], stable=True).indices[:k]] = False
        _install(module, w, keep)
    return _report(model, list(budgets))


def sparsegpt_layer(weight: torch.Tensor, rows: torch.Tensor, sparsity: float,
                    block: int = BLOCK, damping: float = DAMPING,
                    pruned: Optional[torch.Tensor] = None) -> tuple:
    """SparseGPT on one layer: ``weight`` [out, in], its input ``rows`` [n, in]. Returns
    (new weight with the pruned ones 0, keep-mask); round(sparsity * numel) pruned, or,
    given ``pruned`` (a bool mask), exactly those, with the same updates."""
    w = weight.detach().double().clone()
    out, cols = w.shape
    h = rows.double().T @ rows.double()
    dead = torch.diag(h) == 0  # inputs that are zero on every example: free to prune
    h[dead, dead] = 1.0
    h += damping * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype, device=h.device)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    keep = torch.ones_like(w, dtype=torch.bool)
    goal = round(sparsity * w.numel())
    dead_count = int(dead.sum()) * out
    free = dead if dead_count <= goal and pruned is None else torch.zeros_like(dead)
    keep[:, free] = False
    w[:, free] = 0.0
    remaining, open_cols = goal - int((~keep).sum()), int((~free).sum())
    done_cols = 0
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        live = (~free[i1:i2])
        share = round(remaining * (done_cols + int(live.sum())) / max(open_cols, 1)) \
            - round(remaining * done_cols / max(open_cols, 1))
        done_cols += int(live.sum())
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        if pruned is None:
            cost = (w1 ** 2 / torch.diag(u1)[None, :] ** 2).masked_fill(~live[None, :],
                                                                        torch.inf)
            cut = torch.sort(cost.reshape(-1), stable=True).indices[:share]
            pruned1 = torch.zeros_like(w1, dtype=torch.bool).reshape(-1)
            pruned1[cut] = True
            pruned1 = pruned1.view_as(w1) | ~keep[:, i1:i2]
        else:
            pruned1 = pruned[:, i1:i2] | ~keep[:, i1:i2]
        err1 = torch.zeros_like(w1)
        for j in range(i2 - i1):
            q = torch.where(pruned1[:, j], torch.zeros_like(w1[:, j]), w1[:, j])
            e = (w1[:, j] - q) / u1[j, j]
            w1[:, j:] -= e[:, None] * u1[j, j:][None, :]
            w1[:, j] = q
            err1[:, j] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
        keep[:, i1:i2] = ~pruned1
    return w.to(weight.dtype), keep


def sparsegpt(model: nn.Module, examples: torch.Tensor, sparsity: float,
              budgets: Optional[Dict[str, float]] = None, block: int = BLOCK) -> PruneReport:
    """Prune ``model`` in place by SparseGPT to ``sparsity`` (``budgets`` as for
    :func:`wanda`), on ``examples`` (inputs only)."""
    budgets = uniform_budgets(model, sparsity) if budgets is None else budgets
    for _, module, s in _layers(model, budgets, examples):
        w = module.weight.detach().reshape(module.weight.shape[0], -1)
        new, keep = sparsegpt_layer(w, _inputs(model, module, examples), s, block)
        _install(module, new, keep)
    return _report(model, list(budgets))
