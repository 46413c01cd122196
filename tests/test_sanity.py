"""The sanity checks change exactly what they claim, and nothing else (real MNIST)."""
import pytest
import torch

from bingo.engine.targets import select_targets
from bingo.harness.compare import CompareJob
from bingo.harness.models import paper_mlp
from bingo.harness.sanity import (
    CHECKS,
    corrupt_split,
    rearrange,
    run_sanity,
    shuffle_kept,
    shuffle_labels,
    shuffle_pixels,
)
from bingo.harness.shared_run import Harness
from bingo.pruning.masks import apply_masks, current_masks


def test_random_labels_permute_labels_only(mnist, fresh_seed):
    x, y = mnist.train.images[:500], mnist.train.labels[:500]
    x2, y2 = shuffle_labels(x, y, torch.Generator().manual_seed(fresh_seed))
    assert x2 is x                                           # images untouched
    assert torch.equal(torch.bincount(y2, minlength=10), torch.bincount(y, minlength=10))
    assert (y2 != y).float().mean() > 0.5                    # most labels moved


def test_random_pixels_permute_each_image_only(mnist, fresh_seed):
    x, y = mnist.train.images[:50], mnist.train.labels[:50]
    x2, y2 = shuffle_pixels(x, y, torch.Generator().manual_seed(fresh_seed))
    assert y2 is y and x2.shape == x.shape
    for a, b in zip(x, x2):                                  # same pixel values per image
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
        assert not torch.equal(a, b)
    split = corrupt_split(mnist.train.subset(50), "random-pixels", fresh_seed)
    assert torch.equal(split.labels, y)


def _masks(model, sparsity, seed):
    gen = torch.Generator().manual_seed(seed)
    return {t.name: torch.rand(t.shape, generator=gen) >= sparsity for t in select_targets(model)}


def test_rearrange_keeps_each_layers_count_and_moves_positions(fresh_seed):
    masks = _masks(paper_mlp(), 0.8, fresh_seed)
    moved = rearrange(masks, torch.Generator().manual_seed(fresh_seed + 1))
    for name, m in masks.items():
        assert moved[name].shape == m.shape and moved[name].dtype == torch.bool
        assert int(moved[name].sum()) == int(m.sum())
        assert not torch.equal(moved[name], m)


def test_shuffle_kept_permutes_kept_values_within_layers_only(fresh_seed):
    torch.manual_seed(fresh_seed % 1000)
    model = paper_mlp()
    masks = _masks(model, 0.7, fresh_seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shuffle_kept(model, masks, torch.Generator().manual_seed(fresh_seed))
    after = model.state_dict()
    for name, m in masks.items():
        w0, w1 = before[name], after[name]
        assert torch.equal(w1[~m], w0[~m])                   # pruned positions untouched
        assert torch.equal(w1[m].sort().values, w0[m].sort().values)  # same kept values
        assert not torch.equal(w1[m], w0[m])                 # in other places
    for key in before:                                       # biases untouched
        if key not in masks:
            assert torch.equal(before[key], after[key])


def test_apply_and_read_masks(fresh_seed):
    model = paper_mlp()
    masks = _masks(model, 0.6, fresh_seed)
    apply_masks(model, masks)
    got = current_masks(model, list(masks))
    assert all(torch.equal(got[k], masks[k]) for k in masks)
    assert all(torch.all(model.get_submodule(k.rsplit(".", 1)[0]).weight[~m] == 0)
               for k, m in masks.items())


def test_run_sanity_reports_every_check(data_dir):
    job = CompareJob(model="paper-mlp", data_dir=str(data_dir), epochs=1, train_limit=300,
                     methods=("magnitude", "synflow"), sparsities=(0.8,))
    h = Harness(job, progress=False, log=lambda m: None)
    for method in job.methods:
        r = run_sanity(h, method, 0.8)
        assert set(r["checks"]) == set(CHECKS)
        assert 0.0 < r["test_accuracy"] <= 1.0
        for check, v in r["checks"].items():
            if method == "synflow" and check in ("random-labels", "random-pixels"):
                assert v is None                             # data-free: nothing to corrupt
            else:
                assert v["change"] == pytest.approx(v["test_accuracy"] - r["test_accuracy"])
    with pytest.raises(ValueError, match="unknown sanity checks"):
        run_sanity(h, "magnitude", 0.8, checks=["lobotomy"])


def test_bingo_data_checks_corrupt_the_search_not_the_training(data_dir, fresh_seed):
    from bingo.harness.methods import train_and_score
    job = CompareJob(model="paper-mlp", data_dir=str(data_dir), epochs=1, train_limit=256,
                     methods=("bingo",), sparsities=(0.8,), variants=4, fraction=0.1)
    h = Harness(job, progress=False, log=lambda m: None)
    gen = torch.Generator().manual_seed(fresh_seed)
    plain_model, plain_at, *_ = train_and_score(h, "bingo:search")
    plain = plain_at(None)
    seen = []
    model, scores_at, *_ = train_and_score(h, "bingo:search",
                                           search_data=lambda x, y: seen.append(1) or
                                           shuffle_labels(x, y, gen))
    scores = scores_at(None)
    assert len(seen) == 4                                    # every search step went through it
    for k, v in plain_model.state_dict().items():            # training saw the true data
        assert torch.equal(v, model.state_dict()[k])
    assert any(not torch.equal(plain[k], scores[k]) for k in plain)  # the search did not
