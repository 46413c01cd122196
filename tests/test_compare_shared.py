"""One training run shared by the after-training rows of ``bingo compare``: BINGO's search
changes nothing of the training it watches (weights, BatchNorm buffers, random state,
data order), so magnitude, hybrid, Wanda and SparseGPT prune the very network BINGO's run
trained, on the same kept examples, instead of training it again."""
from __future__ import annotations

import json

import pytest
import torch

from bingo.harness import recipes, shared_run
from bingo.harness.compare import run_compare
from bingo.harness.compare_job import CompareJob
from bingo.harness.shared_run import Harness


@pytest.mark.parametrize("model,dataset,limit", [("lenet300", "mnist", 640),
                                                  ("resnet20", "cifar10", 256)])
def test_training_with_a_search_is_bit_identical_to_plain_training(data_dir, model, dataset,
                                                                   limit):
    """The invariant the sharing rests on, with random-subset variants (the search's most
    intrusive mode) and, on the ResNet, BatchNorm in train mode."""
    torch.manual_seed(123)  # the harness seeds its own models; this is the caller's state
    job = CompareJob(data_dir=str(data_dir), model=model, dataset=dataset, epochs=1,
                     train_limit=limit, batch_size=64, estimator="search", seed=5)
    h = Harness(job, False, lambda m: None)
    plain = h.fresh()
    h.train(plain)
    watched = h.fresh()
    search = job.make_search(watched)
    assert search.variants > 0
    h.train(watched, after_step=search.step)
    assert search.step_count == limit // 64
    a, b = plain.state_dict(), watched.state_dict()
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"the search changed training: {changed}"
    assert any("running_mean" in k for k in a) == (model == "resnet20")


def _trainings(monkeypatch) -> list:
    seen = []
    original = shared_run.Harness.train

    def counted(self, model, epochs=None, after_step=None, description="train"):
        seen.append(description)
        return original(self, model, epochs, after_step, description)
    monkeypatch.setattr(shared_run.Harness, "train", counted)
    return seen


def _rows(data_dir, **knobs) -> dict:
    job = CompareJob(data_dir=str(data_dir), model="paper-mlp", dataset="mnist", epochs=1,
                     train_limit=1000, methods=("bingo", "magnitude", "wanda", "hybrid"),
                     sparsities=(0.8,), **knobs)
    results = run_compare(job, progress=False, log=lambda m: None)
    json.dumps(results)  # still JSON-able
    return {m["method"]: m for m in results["methods"]}


def test_after_training_rows_prune_bingos_trained_network(data_dir, monkeypatch):
    seen = _trainings(monkeypatch)
    rows = _rows(data_dir, calibration=512)
    assert [d for d in seen if not d.startswith("retrain")] == ["train+search bingo (weight)"]
    dense = {m: r["dense_test_accuracy"] for m, r in rows.items()}
    assert len(set(dense.values())) == 1, dense
    magnitude = rows["magnitude"]["points"][0]
    assert abs(magnitude["zeros"] - 0.8) < 1e-3 and magnitude["test_accuracy"] > 0.5


def test_a_search_keeping_other_examples_is_not_shared(data_dir, monkeypatch):
    """With fewer kept examples than the baselines read (char-gpt's default), the dense
    run trains on its own, and comes out the same."""
    monkeypatch.setitem(recipes.SEARCH_CALIBRATION, "paper-mlp", 64)
    seen = _trainings(monkeypatch)
    rows = _rows(data_dir)
    assert [d for d in seen if not d.startswith("retrain")] == ["train+search bingo (weight)",
                                                                "train dense"]
    dense = {m: r["dense_test_accuracy"] for m, r in rows.items()}
    assert len(set(dense.values())) == 1, dense
