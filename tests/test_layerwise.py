"""The layer-wise one-shot pruners (bingo.harness.baselines.layerwise): SparseGPT's OBS update
equals the closed-form optimum where it can compensate fully, and its masks come close to
a brute-force optimum on tiny layers; Wanda's scores are |w| times input norms, per row;
both prune exact counts in forward order on the pruned network's inputs, the last layer
dense, and run as `bingo compare` rows on real MNIST."""
import itertools
import json

import pytest
import torch
from torch import nn

from bingo.harness.baselines.layerwise import (
    sparsegpt,
    sparsegpt_layer,
    uniform_budgets,
    wanda,
)
from bingo.harness.models import paper_mlp


def _damped(x: torch.Tensor) -> torch.Tensor:
    h = x.T @ x
    return h + 0.01 * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)


def test_the_obs_update_is_the_optimum_when_every_column_can_compensate(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    out, cols = 5, 11
    x = torch.randn(40, cols, generator=g, dtype=torch.float64) @ torch.randn(
        cols, cols, generator=g, dtype=torch.float64)  # correlated inputs
    w = torch.randn(out, cols, generator=g, dtype=torch.float64)
    pruned = torch.zeros(out, cols, dtype=torch.bool)
    pruned[:, 0] = True  # the first column: every other one lies to its right
    new, keep = sparsegpt_layer(w, x, 0.0, block=4, pruned=pruned)
    h = _damped(x)
    rest = torch.arange(1, cols)
    # argmin over w' with w'_0 = 0 of (w - w')ᵀ H (w - w'), row by row, in closed form
    best = w[:, rest] + (torch.linalg.solve(h[rest][:, rest], h[rest][:, [0]]) @ w[:, [0]].T).T
    assert torch.allclose(new[:, rest], best, atol=1e-10, rtol=1e-9)
    assert (new[:, 0] == 0).all() and torch.equal(keep, ~pruned)


def test_sparsegpt_comes_close_to_the_brute_force_optimum_on_tiny_layers(fresh_seed):
    """2 x 6 weights at 50%: every one of the C(12, 6) = 924 masks with its optimal
    compensation (the OBS error w_Sᵀ [(H⁻¹)_SS]⁻¹ w_S per row) against SparseGPT's mask
    and update. Over seeds 0-59 its error was at most 1.163x the optimum (mean 1.03), and
    below magnitude pruning without an update in 54 of 60."""
    masks = [torch.tensor(c) for c in itertools.combinations(range(12), 6)]
    ratios, beats_magnitude = [], 0
    for k in range(12):  # 12 layers: at 9 in 10, 7 or more beat magnitude but 1 run in 2,000
        g = torch.Generator().manual_seed(fresh_seed * 12 + k)
        x = torch.randn(64, 6, generator=g, dtype=torch.float64)
        w = torch.randn(2, 6, generator=g, dtype=torch.float64)
        h = _damped(x)
        h_inv = torch.linalg.inv(h)

        def error(other):
            d = w - other
            return float(torch.einsum("ri,ij,rj->", d, h, d))
        best = float("inf")
        for chosen in masks:
            flat = torch.zeros(12, dtype=torch.bool)
            flat[chosen] = True
            total = 0.0
            for r, s in enumerate(flat.view(2, 6)):
                if s.any():
                    total += float(w[r, s] @ torch.linalg.solve(h_inv[s][:, s], w[r, s]))
            best = min(best, total)
        new, keep = sparsegpt_layer(w, x, 0.5, block=6)
        assert int((~keep).sum()) == 6 and (new[~keep] == 0).all()
        ratios.append(error(new) / best)
        small = torch.sort(w.abs().reshape(-1), stable=True).indices[:6]
        magnitude = w.clone().reshape(-1)
        magnitude[small] = 0
        beats_magnitude += error(new) < error(magnitude.view(2, 6))
    assert min(ratios) >= 1 - 1e-9, "better than the brute-force optimum: the check is wrong"
    assert max(ratios) <= 1.5 and sum(ratios) / len(ratios) <= 1.2, ratios
    assert beats_magnitude >= 7


def test_uniform_budgets_keep_the_last_layer_dense_when_the_goal_allows():
    model = paper_mlp()  # 100352 + 8192 + 640 weights
    b = uniform_budgets(model, 0.9)
    assert b["fc3.weight"] == 0.0 and b["fc1.weight"] == b["fc2.weight"]
    assert b["fc1.weight"] * (100352 + 8192) == pytest.approx(0.9 * 109184)
    tiny = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 30))  # last layer largest
    assert uniform_budgets(tiny, 0.5) == {"0.weight": 0.5, "2.weight": 0.5}


@pytest.mark.parametrize("method", [wanda, sparsegpt])
def test_both_prune_exact_counts_in_forward_order_on_real_mnist(mnist, method, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    examples = mnist.train.images[:256]
    with torch.no_grad():  # what the pruner sees of fc2: fc1's output after fc1 was pruned
        dense_hidden = model.relu1(model.fc1(model.flatten(examples)))
    dense_fc1 = model.fc1.weight.detach().clone()
    report = method(model, examples, 0.8)
    budgets = uniform_budgets(paper_mlp(), 0.8)
    for name, layer in report.layers.items():
        assert layer.pruned == round(budgets[name] * layer.numel)
    assert report.layers["fc3.weight"].pruned == 0
    with torch.no_grad():
        pruned_hidden = model.relu1(model.fc1(model.flatten(examples)))
    assert not torch.allclose(pruned_hidden, dense_hidden)  # fc1 changed before fc2 ran
    if method is wanda:  # each row of fc1 keeps its largest |w| * ||x_j||
        norms = model.flatten(examples).norm(dim=0)
        score = dense_fc1.abs() * norms  # the weights before pruning
        keep = model.fc1.weight_mask.bool()
        rows = keep.sum(1)
        assert int(rows.max() - rows.min()) <= 1  # the layer's count spread over its rows
        for r in range(0, 128, 17):
            assert score[r][keep[r]].min() >= score[r][~keep[r]].max()


def test_compare_runs_wanda_and_sparsegpt_on_one_dense_run(data_dir, tmp_path):
    from bingo.harness.cli import main
    out = tmp_path / "cmp"
    assert main(["compare", "--data-dir", str(data_dir), "--model", "paper-mlp", "--epochs",
                 "1", "--train-limit", "1000", "--calibration", "512", "--methods",
                 "magnitude,wanda,sparsegpt", "--sparsities", "0.5,0.9", "--out", str(out),
                 "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {m["method"]: m for m in results["methods"]}
    assert rows["wanda"]["dense_test_accuracy"] == rows["sparsegpt"]["dense_test_accuracy"] \
        == rows["magnitude"]["dense_test_accuracy"]  # one init, one data order: same weights
    for name in ("wanda", "sparsegpt"):
        for p in rows[name]["points"]:
            assert abs(p["zeros"] - p["sparsity"]) < 1e-3 and p["last_layer_dense"]
    at_half = {n: rows[n]["points"][0]["test_accuracy"] for n in rows}
    assert at_half["sparsegpt"] > 0.5 and at_half["wanda"] > 0.5
