"""The rule state split by elements across ranks (``RuleState``, ``Ranks.element_range``):
each rank folding a step's changes into its own share gives, once the shares are put
together, exactly the bits one process gets from every element; and the shares cover
every element once. Ranks are simulated here (rank and world set by hand); the real
all-gather of the shares runs in tests/test_distributed.py."""
from __future__ import annotations

import pytest
import torch

from bingo.engine import reference
from bingo.engine.dispatch import select_backend
from bingo.engine.distributed import Ranks
from bingo.engine.reference import SearchPlan
from bingo.engine.rule_state import RuleState
from bingo.engine.rules import SearchChange, get_rule
from bingo.engine.targets import select_targets


def _ranks(rank: int, world: int) -> Ranks:
    ranks = Ranks(None)
    ranks.rank, ranks.world, ranks.active = rank, world, world > 1
    return ranks


def _model():
    # awkward sizes: 37 x 13, 5 x 37, and a 1 x 5 layer smaller than some worlds
    return torch.nn.Sequential(torch.nn.Linear(13, 37), torch.nn.ReLU(),
                               torch.nn.Linear(37, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))


def test_element_ranges_cover_every_element_once():
    for world in (1, 2, 3, 5, 8):
        for size in (0, 1, 2, 7, 481, 1000):
            ranges = [_ranks(r, world).element_range(size) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous
            lengths = [hi - lo for lo, hi in ranges]
            assert max(lengths) - min(lengths) <= 1 and sum(lengths) == size


@pytest.mark.parametrize("rule", ["paper", "mean", "contrast"])
@pytest.mark.parametrize("which", ["reference", "dispatch"])
@pytest.mark.parametrize("world", [2, 3, 8])
def test_shares_put_together_are_one_process_state(rule, which, world, fresh_seed):
    seed = fresh_seed
    gen = torch.Generator().manual_seed(seed)
    model = _model()
    targets = select_targets(model)
    params = dict(model.named_parameters())
    backend = reference if which == "reference" else select_backend(torch.device("cpu"))
    total = sum(t.size for t in targets)
    one = RuleState(get_rule(rule), targets, params, _ranks(0, 1))
    shares = [RuleState(get_rule(rule), targets, params, _ranks(r, world))
              for r in range(world)]
    for step in range(4):  # random signed changes, a fresh plan each step
        plan = SearchPlan(seed % 2**32, step, 6, 40, "weight", total)
        changes = [SearchChange(float(r), float(d)) for r, d in
                   zip(torch.rand(6, generator=gen), torch.randn(6, generator=gen))]
        one.accumulate(backend, plan, changes)
        for s in shares:
            s.accumulate(backend, plan, changes)
    expected = one.whole()
    assert any(bool((v != get_rule(rule).init_state(v.shape, v.dtype, v.device)[k]).any())
               for state in expected for k, v in state.items())  # the steps changed it
    for i, t in enumerate(targets):
        for key, whole in expected[i].items():
            put = torch.full_like(whole, float("nan"))
            for r, s in enumerate(shares):
                lo, hi = s.ranks.element_range(t.size)
                put[lo:hi] = s._states[i][key][lo:hi]
            assert torch.equal(put, whole), (t.name, key)
