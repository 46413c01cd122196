"""The C++ backend's operations alone, at LeNet-300-100's sizes (fc1: 784 -> 300, batch
512, K = 16, p = 13/256): subset masks, the shared-input Linear correction, and one
step's fused accumulation. CPU only.

    python -m pytest bench/bench_ops.py --benchmark-only
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bingo.engine import cpp
from bingo.engine.reference import SearchPlan
from bingo.engine.rules import RULES, SearchChange
from bingo.engine.targets import select_targets
from bingo.harness.models import lenet300

K, THRESHOLD, BATCH = 16, 13, 512

pytestmark = pytest.mark.skipif(not cpp.available(), reason="bingo._cpu is not built")


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    model = lenet300()
    targets = select_targets(model)
    plan = SearchPlan(1, 2, K, THRESHOLD, "weight", sum(t.size for t in targets))
    return model, targets, plan


def test_subset_masks(benchmark, lenet):
    _, targets, plan = lenet
    benchmark.group = "cpp ops"
    benchmark(cpp.subset_masks, plan, range(K), targets, torch.device("cpu"))


def test_linear_shared_correction(benchmark, lenet):
    model, targets, plan = lenet
    fc1 = model.fc1
    x = torch.randn(BATCH, 784)
    w, b = fc1.weight.detach(), fc1.bias.detach()
    w0 = w + 0.01 * torch.randn_like(w)
    base = F.linear(x, w, b)
    benchmark.group = "cpp ops"
    benchmark(cpp.linear_variants, plan, range(K), targets[0], x, w, w0, b, b, base=base)


def test_accumulate_paper(benchmark, lenet):
    _, targets, plan = lenet
    rule = RULES["paper"]
    states = [rule.init_state(torch.Size([t.size]), torch.float32, torch.device("cpu"))
              for t in targets]
    changes = [SearchChange(0.01 * k, 0.001 * k) for k in range(K)]
    benchmark.group = "cpp ops"
    benchmark(cpp.accumulate, plan, targets, rule, states, changes)
