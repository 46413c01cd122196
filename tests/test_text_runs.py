"""char-gpt on real tinyshakespeare through ``bingo prune`` and ``bingo compare`` (a few
steps: the wiring, not the loss reached), the text split's windows, the loss metric's
refusals, the recipes, AdamW and the warm-up schedule."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from bingo.engine.losses import cross_entropy
from bingo.engine.reference import SearchBatch
from bingo.harness.cli import main
from bingo.harness import recipes
from bingo.harness.compare_job import METHODS, CompareJob
from bingo.harness.data import TextSplit, load_dataset, load_text
from bingo.harness.gpt import CharGPT
from bingo.harness.prune_job import PruneJob
from bingo.harness.training import lr_factor, make_optimizer, mean_loss

GPT = ["--model", "char-gpt", "--dataset", "tinyshakespeare", "--train-limit", "6000",
       "--epochs", "1", "--calibration", "16", "--quiet"]


def test_text_windows_predict_the_next_character_and_cover_an_epoch(data_dir, fresh_seed):
    corpus = load_text(data_dir)
    split = TextSplit(corpus.train[:5000], context=64)
    assert len(split) == 4999 // 64
    gen = torch.Generator().manual_seed(fresh_seed)
    shuffled = list(split.batches(12, gen))
    assert sum(len(x) for x, _ in shuffled) == len(split)
    for x, y in shuffled:
        assert x.shape == y.shape and x.shape[1] == 64
        # each target window is its input window shifted by one character of the corpus
        assert torch.equal(x[:, 1:], y[:, :-1])
        starts = [int((split.ids.unfold(0, 64, 1) == row).all(1).nonzero()[0]) for row in x[:3]]
        for row, s in zip(y[:3], starts):
            assert torch.equal(row, split.ids[s + 1:s + 65])
    ordered = torch.cat([x for x, _ in split.batches(7, shuffle=False)])
    assert torch.equal(ordered.flatten(), split.ids[:len(split) * 64])  # every character once
    assert len(split.subset(1000).ids) == 1000
    with pytest.raises(ValueError, match="counted in characters"):
        split.subset(64)


def test_the_text_dataset_reports_validation_loss(data_dir):
    data = load_dataset("tinyshakespeare", data_dir)
    assert data.metric == "loss" and data.test is data.val
    corpus = load_text(data_dir)
    assert len(data.train.ids) + len(data.val.ids) == len(corpus.train) + len(corpus.val)
    torch.manual_seed(0)
    model = CharGPT(layers=1, width=32, heads=2)
    loss = mean_loss(model, data.val.subset(3000))
    assert abs(loss - math.log(65)) < 0.2  # an untrained model: near uniform over 65


def test_the_default_loss_reads_classes_on_the_last_dimension(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    logits, targets = torch.randn(5, 7, 11, generator=gen), torch.randint(0, 11, (5, 7),
                                                                          generator=gen)
    expected = F.cross_entropy(logits.reshape(35, 11), targets.reshape(35))
    assert torch.allclose(cross_entropy(logits, targets), expected)
    flat, labels = torch.randn(9, 4, generator=gen), torch.randint(0, 4, (9,), generator=gen)
    assert torch.allclose(cross_entropy(flat, labels), F.cross_entropy(flat, labels))
    # the batched score of V variants' sequence outputs equals one call per variant
    outs = torch.randn(3, 5, 7, 11, generator=gen)
    for metric in ("loss", "accuracy"):
        batch = SearchBatch(None, None, targets, metric, cross_entropy)
        one_by_one = SearchBatch(None, None, targets, metric, lambda o, y: cross_entropy(o, y))
        got = batch.score(outs)
        if metric == "loss":
            assert torch.allclose(got, one_by_one.score(outs).to(got.dtype))
        else:
            want = torch.stack([(o.argmax(-1) == targets).double().mean() for o in outs])
            assert torch.allclose(got, want)


def test_prune_runs_char_gpt_one_shot_and_gradually_with_loss_fields(data_dir, tmp_path):
    out = tmp_path / "one.json"
    assert main(["prune", "--data-dir", str(data_dir), *GPT, "--sparsity", "0.5",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert abs(result["sparsity"] - 0.5) < 1e-4
    assert result["dense_val_loss"] > 0 and result["pruned_val_loss"] > 0
    assert "pruned_accuracy" not in result
    assert result["config"]["optimizer"] == "adamw"  # the model's recipe
    assert result["config"]["lr_schedule"] == "warmup-cosine"
    assert result["train_steps"] == math.ceil((5999 // 64) / 12)
    memory = result["memory"]  # the search's own state is O(parameters)
    assert 0 < memory["search_state_mb"] < 6 * memory["parameter_mb"]
    assert memory["kept_examples_mb"] == pytest.approx(16 * 64 * 2 * 8 / 2**20)
    assert memory["peak_rss_mb_after_scoring"] >= memory["peak_rss_mb_after_training"] > 0
    out = tmp_path / "gradual.json"
    assert main(["prune", "--data-dir", str(data_dir), *GPT, "--sparsity", "0.7",
                 "--schedule", "gradual", "--gmp-every", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert abs(result["sparsity"] - 0.7) < 1e-4 and result["pruned_val_loss"] > 0
    assert result["dense_val_loss"] is None


def test_compare_runs_char_gpt_and_tables_the_validation_loss(data_dir, tmp_path):
    out = tmp_path / "c"
    assert main(["compare", "--data-dir", str(data_dir), *GPT, "--methods",
                 "gmp,magnitude,wanda", "--sparsities", "0.5", "--gmp-every", "1",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {m["method"]: m for m in results["methods"]}
    for m in rows.values():
        ((point,),) = [m["points"]]
        assert point["val_loss"] > 0 and abs(point["zeros"] - 0.5) < 2e-2
    assert rows["magnitude"]["dense_val_loss"] > 0
    assert "val loss @ 50%" in (out / "results.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--methods", "gmp", "--sparsities", "0.5", "--min-accuracy", "0.5"],
     "reports validation loss, not accuracy"),
    (["--methods", "gmp", "--sparsities", "0.5", "--sanity"], "--sanity does not run"),
])
def test_what_text_runs_do_not_take_is_refused_by_name(data_dir, tmp_path, capsys, extra,
                                                       message):
    assert main(["compare", "--data-dir", str(data_dir), *GPT, *extra,
                 "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_text_one_shot_needs_a_sparsity_and_compare_defaults_run_every_method():
    with pytest.raises(ValueError, match="give --sparsity"):
        PruneJob(model="char-gpt", dataset="tinyshakespeare").target()
    assert CompareJob(model="char-gpt", dataset="tinyshakespeare").methods == METHODS


def test_imp_and_synflow_run_on_text_and_record_the_validation_loss(data_dir, tmp_path):
    out = tmp_path / "c"
    assert main(["compare", "--data-dir", str(data_dir), *GPT, "--methods", "imp,synflow",
                 "--sparsities", "0.36,0.5", "--imp-rate", "0.2", "--imp-scope", "global",
                 "--synflow-iterations", "4",
                 "--out", str(out)]) == 0
    rows = {m["method"]: m for m in json.loads((out / "results.json").read_text())["methods"]}
    imp_row = rows["imp"]
    assert [r["round"] for r in imp_row["history"]] == [0, 1, 2, 3]
    assert [round(r["sparsity"], 3) for r in imp_row["history"]] == [0.0, 0.2, 0.36, 0.5]
    assert all(r["val_loss"] > 0 and "val_accuracy" not in r for r in imp_row["history"])
    assert imp_row["dense_val_loss"] == imp_row["history"][0]["val_loss"]
    for row in rows.values():
        assert [p["sparsity"] for p in row["points"]] == [0.36, 0.5]
        for p in row["points"]:
            assert p["val_loss"] > 0 and abs(p["zeros"] - p["sparsity"]) < 2e-3
    assert [p["val_loss"] for p in imp_row["points"]] == [r["val_loss"] for r in
                                                          imp_row["history"][2:]]
    assert "| imp |" in (out / "results.md").read_text()


def test_recipes_fill_what_is_not_given():
    for cifar in ("resnet20", "vgg11-w16"):
        job = PruneJob(model=cifar, dataset="cifar10")
        assert (job.optimizer, job.lr, job.lr_schedule, job.batch_size, job.weight_decay,
                job.epochs, job.calibration) == ("sgd", 0.1, "cosine", 128, 5e-4, 15, 256)
    job = PruneJob(model="char-gpt", dataset="tinyshakespeare", lr=3e-4)
    assert job.lr == 3e-4 and job.optimizer == "adamw" and job.calibration == 256
    job = PruneJob()
    assert (job.optimizer, job.lr, job.epochs, job.calibration) == ("adam", 1e-3, 3, 2048)
    # --help lists every recipe in full (a precedence slip once cut the CIFAR ones to
    # "calibration 256")
    lines = recipes.describe().split("; ")
    assert len(lines) == 1 + len(recipes.RECIPES)
    assert all(" epochs, calibration " in line for line in lines)
    assert "resnet20: sgd 0.1, weight decay 0.0005, cosine, batch 128, 15 epochs" in lines[1]


def test_adamw_decays_only_matrices_and_warmup_cosine_rises_then_falls():
    model = CharGPT(layers=1, width=16, heads=2)
    opt = make_optimizer("adamw", model.parameters(), 1e-3, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    f = lr_factor("warmup-cosine", 1000)
    warm = [f(s) for s in range(50)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(1 / 50) and f(49) == 1.0
    assert f(999) == pytest.approx(0.1, abs=1e-4) and f(500) < f(100) < 1.0


def test_a_loss_ceiling_prunes_as_far_as_the_validation_loss_allows(data_dir, tmp_path,
                                                                    monkeypatch):
    """`bingo prune --max-loss-increase`: the largest sparsity (to the bisection's
    tolerance) whose validation loss stays within the dense loss + the increase; the
    validation split cut to 6,000 characters to keep the test short."""
    import bingo.harness.prune_job as jobs
    real = jobs.load_dataset

    def shorter(name, root):
        data = real(name, root)
        data.val = data.test = data.val.subset(6000)
        return data
    monkeypatch.setattr(jobs, "load_dataset", shorter)
    out = tmp_path / "ceiling.json"
    assert main(["prune", "--data-dir", str(data_dir), *GPT, "--max-loss-increase", "0.02",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    ceiling = r["dense_val_loss"] + 0.02
    assert r["config"]["max_loss_increase"] == 0.02 and "loss+0.02" in r["name"]
    assert r["pruned_val_loss"] <= ceiling
    trials = r["prune_evaluations"]
    assert all(set(t) == {"sparsity", "loss"} for t in trials) and len(trials) >= 8
    ok = [t["sparsity"] for t in trials if t["loss"] <= ceiling]
    over = [t["sparsity"] for t in trials if t["loss"] > ceiling]
    assert over and 0 < r["sparsity"] < min(over)  # a sparser trial broke the ceiling
    assert min(over) - max(ok) <= 2e-3  # and the bisection closed in on it
    assert abs(r["sparsity"] - max(ok)) < 1e-3  # the zeros really there


@pytest.mark.parametrize("job, message", [
    (dict(max_loss_increase=0.05), "is for the text datasets; give --min-accuracy"),
    (dict(model="char-gpt", dataset="tinyshakespeare", max_loss_increase=0.05, sparsity=0.5),
     "not --sparsity and --max-loss-increase"),
    (dict(model="char-gpt", dataset="tinyshakespeare", max_loss_increase=0.0),
     "must be > 0"),
    (dict(model="char-gpt", dataset="tinyshakespeare", max_loss_increase=0.05,
          schedule="gradual"), "a loss ceiling needs the one-shot schedule"),
])
def test_a_loss_ceiling_is_refused_where_it_does_not_apply(job, message):
    with pytest.raises(ValueError, match=message):
        PruneJob(**job).target()


def test_prune_under_a_loss_ceiling_refuses_one_the_dense_model_misses():
    from bingo.pruning.masks import prune
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    scores = {"0.weight": torch.rand(3, 4)}
    with pytest.raises(ValueError, match="unreachable loss ceiling.*raise max_loss"):
        prune(model, scores, max_loss=1.0, evaluate=lambda m: 2.0)
    with pytest.raises(ValueError, match="max_loss needs evaluate="):
        prune(model, scores, max_loss=1.0)
    with pytest.raises(ValueError, match="exactly one of"):
        prune(model, scores, max_loss=1.0, sparsity=0.5, evaluate=lambda m: 0.0)
    assert not hasattr(model[0], "weight_mask")  # nothing pruned on refusal
