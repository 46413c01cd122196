"""BINGO during the training run (bingo.pruning.gradual_ticket): each event keeps magnitude's
mask unless another candidate's losses, measured here independently on the kept examples,
are lower by the margin (without one: the lowest); with magnitude as its only candidate
it is gradual magnitude pruning mask for mask; nothing the user holds is changed by an
event; bad input is refused by name."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from bingo.harness.baselines.gmp import GradualMagnitudePruning
from bingo.harness.gpt import CharGPT
from bingo.harness.models import paper_mlp
from bingo.pruning.gradual_ticket import DEFAULT_CANDIDATES, GradualTicketPruning
from tests.gradual_runs import independent_loss, total_steps, train_with


@pytest.mark.parametrize("scope, candidate", [("global", "magnitude"), ("lamp", "lamp")])
def test_with_magnitude_alone_it_is_gradual_magnitude_pruning(mnist, fresh_seed, scope,
                                                              candidate):
    runs = []
    for make in (lambda m, n: GradualMagnitudePruning(m, sparsity=0.93, total_steps=n, every=4,
                                                      scope=scope),
                 lambda m, n: GradualTicketPruning(m, sparsity=0.93, total_steps=n, every=4,
                                                   candidates=(candidate,),
                                                   calibration=256)):
        torch.manual_seed(fresh_seed)
        model = paper_mlp()
        pruner = make(model, total_steps(mnist))
        train_with(model, mnist, pruner, seed=fresh_seed)
        pruner.finish()
        runs.append((model, pruner.keep()))
    # after its last event nothing reads the search, so it stepped up to that event only
    assert pruner.search.step_count == pruner.schedule.last + 1 < pruner.step_count
    (gmp_model, gmp_keep), (bingo_model, bingo_keep) = runs
    assert all(torch.equal(gmp_keep[n], bingo_keep[n]) for n in gmp_keep)
    for a, b in zip(gmp_model.parameters(), bingo_model.parameters()):
        assert torch.equal(a, b)  # the search step changed nothing of the training


def _proposal(pruner, candidate):
    """The mask ``candidate`` alone proposes at an event to 95% (the pruner's state kept)."""
    saved = pruner.candidates, dict(pruner.chosen), pruner.vetoed, pruner.note()
    pruner.candidates = (candidate,)
    try:
        return pruner.choose(0.95)
    finally:
        pruner.candidates, pruner.chosen, pruner.vetoed, pruner._last = saved


def test_an_event_keeps_magnitude_unless_another_mask_measures_clearly_lower(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    total = total_steps(mnist)
    pruner = GradualTicketPruning(model, sparsity=0.9, total_steps=total, every=5,
                                  candidates=("magnitude", "mag+movement"),
                                  calibration=512, seed=fresh_seed % 1000)
    # train without events past the first ones, then call one event by hand
    train_with(model, mnist, pruner)
    assert [e["chosen"] for e in pruner.events][0] == "none"  # the first event is at 0
    assert sum(pruner.chosen.values()) == len(pruner.schedule.events()) - 1
    model.train()
    rng, weights = torch.get_rng_state(), {n: p.clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    before = pruner.keep()
    masks = pruner.choose(0.95)
    inputs, labels = pruner.search.calibration_batch()
    losses = {k[5:]: v for k, v in pruner.note().items() if k.startswith("loss ")}
    assert set(losses) == set(pruner.candidates)
    chosen = pruner.note()["chosen"]
    assert independent_loss(model, masks, inputs, labels) == pytest.approx(losses[chosen],
                                                                            rel=1e-5)
    # the margin: mag+movement replaces magnitude only if its per-example losses are lower
    # by 2 standard errors of the paired difference (worked out here with numpy)
    d = (independent_loss(model, _proposal(pruner, "mag+movement"), inputs, labels, "none")
         - independent_loss(model, _proposal(pruner, "magnitude"), inputs, labels, "none"))
    clearly = d.mean() + 2.0 * d.std(ddof=1) / np.sqrt(len(d)) < 0
    lower = losses["mag+movement"] < losses["magnitude"]
    assert chosen == ("mag+movement" if lower and clearly else "magnitude")
    assert pruner.note().get("vetoed", False) == (lower and not clearly)
    # and the threshold is the paired t statistic: just below it mag+movement wins, just
    # above it magnitude stays and the event notes the veto
    t = -d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert lower and t > 0  # at this early event mag+movement is far lower on every seed tried
    for margin, expect in ((0.99 * t, "mag+movement"), (1.01 * t, "magnitude")):
        pruner.margin = float(margin)
        pruner.choose(0.95)
        assert pruner.note()["chosen"] == expect
        assert pruner.note().get("vetoed", False) == (expect == "magnitude")
    pruner.margin = 0.0  # no margin: the lowest mean loss, however small its lead
    pruner.choose(0.95)
    assert pruner.note()["chosen"] == min(losses, key=lambda c: (losses[c], c != "magnitude"))
    # magnitude's proposal, computed here: the smallest |w| among the kept, over all layers
    w = {n: (getattr(model.get_submodule(n.rsplit(".", 1)[0]), "weight_orig") * before[n].float())
         for n in before}
    flat = torch.cat([torch.where(before[n], w[n].abs(), torch.tensor(-1.0)).reshape(-1)
                      for n in before])
    cut = torch.sort(flat, stable=True).indices[:round(0.95 * flat.numel())]
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[cut] = False
    magnitude = dict(zip(before, (p.view_as(before[n]) for p, n in
                                  zip(torch.split(keep, [before[n].numel() for n in before]),
                                      before))))
    assert independent_loss(model, magnitude, inputs, labels) == pytest.approx(
        losses["magnitude"], rel=1e-5)
    assert all(not (masks[n] & ~before[n]).any() for n in before)  # masks only grow
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.95 * flat.numel())
    # the event measured without writing anything the user holds
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_finish_reports_the_zeros_and_the_masks_are_torch_prune_masks(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    pruner = GradualTicketPruning(model, sparsity=0.8, total_steps=10 * total_steps(mnist),
                                  calibration=256, candidates=("magnitude", "mag+fisher"))
    train_with(model, mnist, pruner)  # a tenth of the planned run: finish() completes it
    report = pruner.finish()
    numel = sum(x.numel for x in report.layers.values())
    assert sum(x.pruned for x in report.layers.values()) == round(0.8 * numel)
    zeros = sum(int((model.get_submodule(n.rsplit(".", 1)[0]).weight == 0).sum())
                for n in report.layers)
    assert report.sparsity == zeros / numel >= round(0.8 * numel) / numel
    assert torch_prune.is_pruned(model)
    with pytest.raises(ValueError, match="belongs to a GradualTicketPruning"):
        pruner.search.significance("magnitude")
    # the proxies read weight_orig, whose gradient is zero where the mask is
    fisher = [s["fisher"].clone() for s in pruner.search.proxies.sums]
    x, y = mnist.train.images[:64], mnist.train.labels[:64]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for _ in range(3):  # a full proxy step among them
        pruner.search.step(x, y)
    for i, t in enumerate(pruner.search.targets):
        mask = model.get_submodule(t.module_name).weight_mask == 0
        assert torch.equal(pruner.search.proxies.sums[i]["fisher"][mask], fisher[i][mask])
        assert not torch.equal(pruner.search.proxies.sums[i]["fisher"], fisher[i])


@pytest.mark.parametrize("kwargs, message", [
    (dict(variants=4), "leave variants at 0"),
    (dict(calibration=0), "calibration=0 keeps none"),
    (dict(candidates=("magnitude", "snip")), "unknown candidates"),
    (dict(candidates=()), "unknown candidates"),
    (dict(movement=False), "needs the movement proxy"),
    (dict(start=0.9, end=0.2), "0 <= start < end <= 1"),
    (dict(margin=-1.0), "margin is a number of standard errors >= 0"),
    (dict(margin=float("nan")), "margin is a number of standard errors >= 0"),
    (dict(margin="2"), "margin is a number of standard errors >= 0"),
])
def test_bad_options_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualTicketPruning(paper_mlp(), **{"sparsity": 0.9, "total_steps": 100, **kwargs})


def test_a_custom_loss_is_split_per_example_or_refused_with_the_fix(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    x, y = mnist.train.images[:96], mnist.train.labels[:96]

    def nll(out, labels):  # a loss vmap can split: per example it is cross-entropy's
        return -out.log_softmax(-1).gather(-1, labels[..., None]).mean()

    pruner = GradualTicketPruning(model, sparsity=0.9, total_steps=100, loss_fn=nll)
    out = model(x).detach()
    each = pruner._per_example(out, y)
    assert torch.allclose(each, F.cross_entropy(out, y, reduction="none").double(), atol=1e-6)

    def python_loss(out, labels):  # reads a Python number: vmap cannot trace it
        return out.sum() * float(labels.float().mean())

    pruner.search.loss_fn = python_loss  # so it is called once per example
    expected = torch.stack([python_loss(out[i:i + 1], y[i:i + 1]) for i in range(96)])
    assert torch.equal(pruner._per_example(out, y), expected.double())

    def from_output(output, labels):  # a model output with a non-tensor field
        assert output["note"] == "logits"
        return F.cross_entropy(output["logits"], labels)

    pruner.search.loss_fn = from_output
    each = pruner._per_example({"logits": out, "note": "logits"}, y)
    assert torch.allclose(each, F.cross_entropy(out, y, reduction="none").double(), atol=1e-6)

    def batch_only(out, labels):  # refuses a batch of one
        if len(labels) < 2:
            raise RuntimeError("needs two examples")
        return F.cross_entropy(out, labels)

    pruner.search.loss_fn = batch_only
    with pytest.raises(ValueError, match="needs two examples.*give margin=0"):
        pruner._per_example(out, y)


def test_the_cli_prunes_during_training_and_compare_runs_the_gradual_rows(data_dir, tmp_path,
                                                                          capsys):
    import json

    from bingo.harness.cli import main
    out = tmp_path / "gradual.json"
    quick = ["--data-dir", str(data_dir), "--epochs", "1", "--train-limit", "2000",
             "--gmp-every", "5", "--calibration", "256"]
    assert main(["prune", *quick, "--schedule", "gradual", "--sparsity", "0.9", "--quiet",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "bingo-gradual" and result["name"].startswith("bingo-gradual_")
    assert result["sparsity"] >= 0.9 - 1e-5 and result["pruned_accuracy"] > 0.5
    from bingo.pruning.schedule import CubicSchedule
    events = CubicSchedule(0.9, 32, every=5).events()  # 2000 images at 64: 32 steps
    assert [e["step"] for e in result["events"]] == events == [3, 8, 13, 18, 23, 24]
    assert sum(result["chosen"].values()) == len(events) - 1  # none at step 3: sparsity 0
    assert result["config"]["event_margin"] is None and result["name"].endswith("_c256_seed0")
    assert main(["prune", *quick, "--schedule", "gradual", "--sparsity", "0.9", "--quiet",
                 "--event-margin", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())  # margin 0: nothing is ever vetoed
    assert result["vetoed"] == 0 and result["name"].endswith("_c256_m0.0_seed0")
    assert set(result["chosen"]) == {"magnitude", "mag+movement", "lamp"}  # the defaults
    assert main(["prune", *quick, "--schedule", "gradual", "--sparsity", "0.9", "--quiet",
                 "--event-candidates", "magnitude,lamp", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["chosen"]) == {"magnitude", "lamp"}
    assert result["name"].endswith("_c256_cmagnitude-lamp_seed0")
    with pytest.raises(SystemExit, match="2"):
        main(["prune", *quick, "--schedule", "gradual", "--sparsity", "0.9",
              "--event-candidates", "magnitude,lamb", "--quiet"])
    assert "unknown candidates ['lamb']" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        main(["prune", *quick, "--schedule", "gradual", "--sparsity", "0.9",
              "--event-margin=-1", "--quiet"])
    assert "must be a number >= 0" in capsys.readouterr().err
    assert main(["prune", *quick, "--schedule", "gradual", "--quiet"]) == 2
    assert "give --sparsity" in capsys.readouterr().err
    assert main(["prune", *quick, "--schedule", "gradual", "--sparsity", "0.9",
                 "--variants", "4", "--quiet"]) == 2
    assert "drop --variants" in capsys.readouterr().err
    assert main(["compare", *quick, "--methods", "gmp,gmp-layer,bingo-gradual",
                 "--sparsities", "0.9", "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == ["gmp", "gmp-layer", "bingo-gradual"]
    for m in results["methods"]:
        (point,) = m["points"]
        assert point["sparsity"] == 0.9 and abs(point["zeros"] - 0.9) < 1e-5
        assert point["test_accuracy"] > 0.25 and point["event_seconds"] > 0  # chance: 0.1
    assert "_gmp0.1-0.75-5_" in results["name"]
    assert main(["compare", *quick, "--methods", "gmp", "--gmp-start", "0.8", "--gmp-end",
                 "0.3", "--sparsities", "0.9", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "0 <= start < end <= 1" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:TicketSearch.step found no gradient")  # no training here
def test_the_events_measure_on_512_kept_examples_unless_told_otherwise(mnist, fresh_seed):
    from bingo.harness.prune_job import PruneJob
    torch.manual_seed(fresh_seed)
    x, y = mnist.train.images[:700], mnist.train.labels[:700]
    pruner = GradualTicketPruning(paper_mlp(), sparsity=0.9, total_steps=100)
    for i in range(0, 700, 64):  # more than 512 seen: the oldest are dropped
        pruner.search.step(x[i:i + 64], y[i:i + 64])
    inputs, labels = pruner.search.calibration_batch()
    assert len(labels) == 512 and pruner.summary()["calibration"] == 512
    assert torch.equal(inputs, x[700 - 512:700])  # the most recent, in order
    given = GradualTicketPruning(paper_mlp(), sparsity=0.9, total_steps=100, calibration=96)
    assert given.search.calibration == 96
    # the harness: the recipe's 2,048 (kept for the one-shot estimator) capped at 512 for
    # the gradual schedule; --calibration N given is N; ResNet-20's 256 stays 256, and
    # char-gpt's search and events take 64 sequences, its one-shot baselines the recipe's 256
    assert PruneJob(schedule="gradual", sparsity=0.9).gradual_calibration == 512
    assert PruneJob(schedule="gradual", sparsity=0.9, calibration=2048).gradual_calibration \
        == 2048
    assert PruneJob(model="resnet20", dataset="cifar10", schedule="gradual",
                    sparsity=0.9).gradual_calibration == 256
    gpt = dict(model="char-gpt", dataset="tinyshakespeare", schedule="gradual", sparsity=0.5)
    assert PruneJob(**gpt).gradual_calibration == 64 and PruneJob(**gpt).calibration == 256
    assert PruneJob(**gpt, calibration=256).gradual_calibration == 256
    # the events' candidates: char-gpt's without lamp (measured), the others the pruner's
    assert PruneJob(**gpt).make_gradual(CharGPT(layers=1, width=16, heads=2), 0.5, 100) \
        .candidates == ("magnitude", "mag+movement")
    assert PruneJob(schedule="gradual", sparsity=0.9).make_gradual(paper_mlp(), 0.9, 100) \
        .candidates == DEFAULT_CANDIDATES
    for cifar in ("resnet20", "vgg11", "vgg11-w16"):  # the VGGs take resnet20's set
        assert PruneJob(model=cifar, dataset="cifar10", schedule="gradual", sparsity=0.9) \
            .gradual_candidates == ("magnitude", "mag+movement")
    assert PruneJob(**gpt, event_candidates=("lamp", "magnitude")).gradual_candidates \
        == ("lamp", "magnitude")
    # the movement proxy: summed where a candidate reads it, not otherwise; --no-movement
    # with a movement candidate refused
    job = dict(schedule="gradual", sparsity=0.9)
    assert PruneJob(**job).make_gradual(paper_mlp(), 0.9, 100).search.proxies.movement
    assert not PruneJob(**job, event_candidates=("magnitude", "lamp")) \
        .make_gradual(paper_mlp(), 0.9, 100).search.proxies.movement
    with pytest.raises(ValueError, match="movement proxy"):
        PruneJob(**job, movement=False).make_gradual(paper_mlp(), 0.9, 100)
    one_shot = dict(gpt, schedule="one-shot")
    assert PruneJob(**one_shot).search_calibration == 64
    assert PruneJob(**one_shot).make_search(CharGPT(layers=1, width=16, heads=2)).calibration \
        == 64
    assert PruneJob(**one_shot, calibration=200).search_calibration == 200
    assert PruneJob(sparsity=0.9).search_calibration == PruneJob(sparsity=0.9).calibration \
        == 2048
