"""Each significance rule against hand-computed examples of two or three searches."""
import pytest
import torch

from bingo.engine.rules import SearchChange, Totals, get_rule


def run(rule_name, searches, n=4):
    """Apply (mask indices, SearchChange) searches to n elements; return the scores."""
    rule = get_rule(rule_name)
    state = rule.init_state(torch.Size([n]), torch.float64, torch.device("cpu"))
    totals = Totals()
    for idx, change in searches:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[list(idx)] = True
        rule.update(state, mask, change)
        totals.add(change)
    return rule.score(state, totals).tolist()


# search 1 resets {0, 1}, search 2 resets {1, 2}; element 3 is never reset
TWO = [((0, 1), SearchChange(relative=0.2, damage=0.4)),
       ((1, 2), SearchChange(relative=0.6, damage=-0.2))]
THREE = TWO + [((0, 2), SearchChange(relative=0.1, damage=1.0))]


def test_change_from_metrics():
    loss = SearchChange.from_metrics(before=0.5, after=0.8, higher_is_better=False)
    assert loss.relative == pytest.approx(0.6) and loss.damage == pytest.approx(0.3)
    acc = SearchChange.from_metrics(before=0.8, after=0.6, higher_is_better=True)
    assert acc.relative == pytest.approx(0.25) and acc.damage == pytest.approx(0.2)
    helped = SearchChange.from_metrics(before=0.8, after=0.9, higher_is_better=True)
    assert helped.damage == pytest.approx(-0.1) and helped.relative == pytest.approx(0.125)
    zero = SearchChange.from_metrics(before=0.0, after=0.25, higher_is_better=True)
    assert zero.relative == 0.25  # |A_before| = 0 counts as 1


def test_paper():
    # 0: (0.5+0.2)/2 = 0.35   1: ((0.5+0.2)/2+0.6)/2 = 0.475   2: (0.5+0.6)/2 = 0.55
    assert run("paper", TWO) == pytest.approx([0.35, 0.475, 0.55, 0.5])
    # third search resets 0 and 2 with 0.1: 0 -> (0.35+0.1)/2 = 0.225, 2 -> (0.55+0.1)/2 = 0.325
    assert run("paper", THREE) == pytest.approx([0.225, 0.475, 0.325, 0.5])


def test_paper_literal_ranks_the_other_way():
    # 0: (0.5+0.8)/2 = 0.65   1: (0.65+0.4)/2 = 0.525   2: (0.5+0.4)/2 = 0.45
    assert run("paper-literal", TWO) == pytest.approx([0.65, 0.525, 0.45, 0.5])
    assert not get_rule("paper-literal").ranks_higher_as_important
    # a weight whose reset changed more ends LOWER under the printed formula
    big = [((0,), SearchChange(0.9, 0.9)), ((1,), SearchChange(0.1, 0.1))]
    lit, paper = run("paper-literal", big, n=2), run("paper", big, n=2)
    assert lit[0] < lit[1] and paper[0] > paper[1]


def test_mean():
    # 0: 0.4   1: (0.4-0.2)/2 = 0.1   2: -0.2   3: never reset -> mean of all = 0.1
    assert run("mean", TWO) == pytest.approx([0.4, 0.1, -0.2, 0.1])
    # 0: (0.4+1.0)/2 = 0.7   2: (-0.2+1.0)/2 = 0.4   3: (0.4-0.2+1.0)/3 = 0.4
    assert run("mean", THREE) == pytest.approx([0.7, 0.1, 0.4, 0.4])


def test_contrast():
    # 0: reset {0.4} vs not {-0.2} -> 0.6;  1: reset in both -> no contrast -> 0
    # 2: reset {-0.2} vs not {0.4} -> -0.6; 3: never reset -> 0
    assert run("contrast", TWO) == pytest.approx([0.6, 0.0, -0.6, 0.0])
    # 0: reset {0.4, 1.0}=0.7 vs {-0.2} -> 0.9;  1: {0.4,-0.2}=0.1 vs {1.0} -> -0.9
    # 2: {-0.2, 1.0}=0.4 vs {0.4} -> 0.0;        3: never reset -> 0
    assert run("contrast", THREE) == pytest.approx([0.9, -0.9, 0.0, 0.0])


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown rule 'best'.*contrast"):
        get_rule("best")
