"""Plant one known bug at a time in a copy of the package and check that the tests fail.

The suite is only worth what it catches. Each mutant below is a bug a test exists for
(the holes of issue 20's audit, and the ones it asked to cover next); this script copies
the package, the kernels and the tests to a temporary folder, applies one mutant there
(the working tree is never written), runs the test files where that bug belongs, and
reports whether they failed ("caught") or passed ("MISSED"). Before any mutant, the
unchanged copy must pass the same files, and the copy must be what Python imports.

Run by hand (not part of CI's default run; 3-4 minutes on the 2-core dev VM):

    python tests/mutants.py --data-dir ../shared/data            # every mutant
    python tests/mutants.py --data-dir ../shared/data --only targets-offset rule-sign-mean
    python tests/mutants.py --list

Exit status 0 when every mutant was caught. C++ mutants rebuild the extension in the
copy (about 30 s each); Triton mutants run the kernels under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str                 # file in the copy's layout (kernels/ lives at bingo/kernels/)
    old: str                  # must occur exactly once
    new: str
    tests: Tuple[str, ...]    # test files that must fail
    why: str = ""

    @property
    def rebuild(self) -> bool:
        return self.path.startswith("csrc/")


SEARCH_TESTS = ("tests/test_targets.py", "tests/test_search.py", "tests/test_backends.py",
                "tests/test_batched.py", "tests/test_regression.py", "tests/test_subsets.py")

MUTANTS: List[Mutant] = [
    Mutant("targets-offset", "bingo/engine/targets.py",
           "        offset += size\n", "        offset += 0\n", SEARCH_TESTS,
           "every target's element range starts at 0: later layers reuse fc1's subsets"),
    Mutant("proxies-steps", "bingo/engine/proxies.py",
           'self.decay, self.steps = float(state["decay"]), int(state["steps"])',
           'self.decay = float(state["decay"])', ("tests/test_search.py",
                                                  "tests/test_proxies.py"),
           "Proxies.load_state_dict forgets how many steps fed fisher and reset"),
    Mutant("meter-borrow", "bingo/evidence/meter.py",
           "self.borrowed = Borrowed(search.model, [w.device for w in self.weights.values()],\n"
           "                                 batch_stats=True)",
           'self.borrowed = __import__("contextlib").nullcontext()', ("tests/test_estimators.py",),
           "the calibration meter neither switches to eval mode nor saves the RNG"),
    Mutant("mixtures-ignore-proxy", "bingo/evidence/candidates.py",
           'other = global_ranks(single[n.split("+", 1)[1]])',
           'other = global_ranks(single["magnitude"])', ("tests/test_estimators.py",),
           "the mag+<proxy> mixtures rank by magnitude alone"),
    Mutant("swaps-not-encoded", "bingo/evidence/calibrated.py",
           "best, report.loss_after_swaps, report.swaps, keep = swap_search(",
           "_, report.loss_after_swaps, report.swaps, keep = swap_search(",
           ("tests/test_estimators.py",),
           "the swap search's mask is measured but the scores still prune the budgeted one"),
    Mutant("rule-sign-mean", "bingo/engine/rules.py",
           'state["damage_sum"].add_(m, alpha=change.damage)',
           'state["damage_sum"].add_(m, alpha=-change.damage)', ("tests/test_rules.py",
                                                                 "tests/test_search.py"),
           "the mean and contrast rules sum the damage with the wrong sign"),
    Mutant("rule-sign-paper", "bingo/engine/rules.py",
           "torch.where(mask, (s + self.term(change)) * 0.5, s, out=s)",
           "torch.where(mask, (s - self.term(change)) * 0.5, s, out=s)",
           ("tests/test_rules.py", "tests/test_search.py"),
           "the paper rule subtracts the relative change"),
    Mutant("rule-sign-cpp", "csrc/bingo_cpu.cpp",
           "                       d[i] += dm[k];", "                       d[i] -= dm[k];",
           ("tests/test_backends.py",),
           "the C++ fused accumulation sums the damage with the wrong sign"),
    Mutant("rule-sign-triton", "bingo/kernels/accumulate.py",
           "s = tl.where(reset, (s + term) * 0.5, s)", "s = tl.where(reset, (s - term) * 0.5, s)",
           ("tests/test_kernels.py",),
           "the Triton fused accumulation subtracts the paper rule's term"),
    Mutant("philox-step", "bingo/engine/subsets.py",
           "torch.full(shape, step & M32, dtype=torch.int64, device=device),",
           "torch.full(shape, (step + 1) & M32, dtype=torch.int64, device=device),",
           SEARCH_TESTS, "the reference's Philox counter reads step + 1"),
    Mutant("philox-variant", "bingo/engine/subsets.py",
           "var = torch.tensor([v & M32 for v in variants]",
           "var = torch.tensor([(v + 1) & M32 for v in variants]",
           SEARCH_TESTS, "the reference's Philox counter reads variant + 1"),
    Mutant("philox-group", "bingo/engine/subsets.py",
           "group = torch.arange(first, last + 1, dtype=torch.int64, device=device)",
           "group = torch.arange(first + 1, last + 2, dtype=torch.int64, device=device)",
           SEARCH_TESTS, "the reference's Philox counter reads group + 1"),
    Mutant("philox-group-cpp", "csrc/philox.h",
           "const uint64_t group0 = static_cast<uint64_t>(base / PER_CALL);",
           "const uint64_t group0 = static_cast<uint64_t>(base / PER_CALL + 1);",
           ("tests/test_backends.py", "tests/test_batched.py"),
           "the C++ backend's Philox counter reads group + 1"),
    Mutant("philox-avx512-halves-cpp", "csrc/philox.h",
           "        bits[4 + w] = static_cast<uint32_t>(below >> 32);",
           "        bits[4 + w] = static_cast<uint32_t>(below);",
           ("tests/test_backends.py",),
           "the AVX-512 path hands the first span's bits to the second (caught only on a "
           "CPU with AVX-512)"),
    Mutant("linear-rows-cpp", "csrc/linear.h",
           "*list++ = {static_cast<int32_t>(i), w0r[i] - wr[i]};",
           "*list++ = {static_cast<int32_t>(i), w0r[i] - wr[(i + 1) % I]};",
           ("tests/test_backends.py", "tests/test_batched.py"),
           "the shared-input Linear's resets take their neighbour's current weight"),
    Mutant("philox-variant-triton", "bingo/kernels/philox.py",
           "c1 = (wide + variant).to(tl.uint32)", "c1 = (wide + variant + 1).to(tl.uint32)",
           ("tests/test_kernels.py",), "the Triton kernels' Philox counter reads variant + 1"),
    Mutant("batched-linear-unmasked", "bingo/engine/batched.py",
           "out = ops.linear_variants(plan, chunk, t, x, m.weight, initial[t.name], m.bias,",
           "out = ops.linear_variants(plan, chunk, t, x, m.weight, m.weight, m.bias,",
           ("tests/test_batched.py", "tests/test_backends.py", "tests/test_search.py"),
           "the batched pass computes a Linear's masks but substitutes nothing"),
    Mutant("batched-conv-unmasked", "bingo/engine/batched.py",
           "w = ops.masked_weights(plan, chunk, t, m.weight, initial[t.name])",
           "w = ops.masked_weights(plan, chunk, t, m.weight, m.weight)",
           ("tests/test_batched.py", "tests/test_backends.py"),
           "the batched pass computes a Conv2d's masks but substitutes nothing"),
    Mutant("vmapped-unmasked", "bingo/engine/batched.py",
           "stacked[t.name] = ops.masked_weights(plan, chunk, t, current[t.name], initial[t.name])",
           "stacked[t.name] = ops.masked_weights(plan, chunk, t, current[t.name], current[t.name])",
           ("tests/test_batched.py",),
           "the vmapped pass (models that are no Sequential) substitutes nothing"),
    Mutant("report-counts-mask", "bingo/pruning/masks.py",
           "zeros = int((weight == 0).sum())", "zeros = pruned",
           ("tests/test_pruning.py", "tests/test_refit.py"),
           "PruneReport.sparsity counts the mask, not the zeros really in the weights"),
    Mutant("regression-wrong-layer", "bingo/engine/regression.py",
           "b = beta[name][:len(FEATURES)].to(f.device)",
           "b = beta[regression.names[0]][:len(FEATURES)].to(f.device)",
           ("tests/test_regression.py",),
           "every layer's regression scores use the first layer's coefficients"),
    Mutant("rule-state-share-unshifted", "bingo/engine/rule_state.py",
           "offset=t.offset + lo,", "offset=t.offset,",
           ("tests/test_rule_state.py",),
           "spanning ranks, a rank's share of the rule state reads the subsets of the "
           "target's first elements, not its own"),
    Mutant("rule-state-never-gathered", "bingo/engine/rule_state.py",
           "        if not self._gathered:\n", "        if False:\n",
           ("tests/test_distributed.py",),
           "spanning ranks, the scores are read from this rank's share alone (the other "
           "shares stale)"),
    Mutant("global-batch-unchecked", "bingo/engine/distributed.py",
           "        differ = [r for r in range(self.world) if not same[r]]",
           "        differ = []", ("tests/test_distributed.py",),
           "ranks passing different batches as the global batch go unnoticed"),
    Mutant("calibration-keeps-oldest", "bingo/engine/calibration.py",
           "return torch.cat(xs)[-self.capacity:], torch.cat(ys)[-self.capacity:]",
           "return torch.cat(xs)[:self.capacity], torch.cat(ys)[:self.capacity]",
           ("tests/test_search.py", "tests/test_proxies.py"),
           "the calibration buffer yields its oldest examples, not the most recent"),
    Mutant("schedule-quadratic", "bingo/pruning/schedule.py",
           "(1.0 - (1.0 - (step - t0) / (t1 - t0)) ** 3)",
           "(1.0 - (1.0 - (step - t0) / (t1 - t0)) ** 2)",
           ("tests/test_schedule.py",), "the gradual schedule is quadratic, not cubic"),
    Mutant("cut-ties-not-by-index", "bingo/evidence/candidates.py",
           "tied = (values == cut).nonzero().squeeze(1)[:k - int(below.sum())]",
           "tied = (values == cut).nonzero().squeeze(1).flip(0)[:k - int(below.sum())]",
           ("tests/test_schedule.py",), "the kthvalue cut breaks ties from the last index"),
    Mutant("cut-forgets-pruned", "bingo/pruning/schedule.py",
           "    out = keep.clone()\n    if more > 0:",
           "    out = torch.ones_like(keep)\n    if more > 0:",
           ("tests/test_schedule.py",),
           "the cut starts from a full mask: weights pruned at earlier events count as kept"),
    Mutant("event-keeps-highest", "bingo/pruning/gradual_ticket.py",
           "        best = min([reference] + passing,",
           "        best = max(self.candidates,",
           ("tests/test_gradual_ticket.py",), "an event installs the highest measured loss"),
    Mutant("event-ignores-margin", "bingo/pruning/gradual_ticket.py",
           "or self._clearly_lower(each[c], each[reference])]", "or True]",
           ("tests/test_gradual_ticket.py",),
           "an event takes a lower mean loss however small its lead over magnitude's"),
    Mutant("obs-update-sign", "bingo/harness/baselines/layerwise.py",
           "w1[:, j:] -= e[:, None] * u1[j, j:][None, :]",
           "w1[:, j:] += e[:, None] * u1[j, j:][None, :]",
           ("tests/test_layerwise.py",), "SparseGPT's OBS update pushes the error the wrong way"),
    Mutant("wanda-no-norms", "bingo/harness/baselines/layerwise.py",
           "score = w.abs() * norms[None, :]", "score = w.abs()",
           ("tests/test_layerwise.py",), "Wanda ranks by |w| alone, without the input norms"),
    Mutant("screen-keeps-worst", "bingo/evidence/calibrated.py",
           "sorted(at_global, key=at_global.get)[:SCREEN]",
           "sorted(at_global, key=at_global.get)[-SCREEN:]", ("tests/test_estimator_many_targets.py",),
           "beyond four targets the calibrated estimator balances the worst candidates"),
    Mutant("predicted-sign", "bingo/evidence/calibrated.py",
           "more[n] = float((curvature - g * w)[removed].sum())",
           "more[n] = float((curvature + g * w)[removed].sum())", ("tests/test_estimator_many_targets.py",),
           "the predicted change of pruning more takes the gradient term with the wrong sign"),
    Mutant("text-targets-unshifted", "bingo/harness/data/text.py",
           "yield window[:, :-1], window[:, 1:]", "yield window[:, :-1], window[:, :-1]",
           ("tests/test_text_runs.py",), "text targets are the inputs, not the next characters"),
    Mutant("sequence-loss-flat", "bingo/engine/reference.py",
           "labels = self.labels.expand(v, *self.labels.shape).flatten()",
           "labels = self.labels.repeat(v)", ("tests/test_text_runs.py",),
           "the batched score pairs sequence variants with the wrong labels"),
    Mutant("prefix-stale-activation", "bingo/evidence/meter.py",
           "if entry is not None and _version(entry[0]) == entry[1]:",
           "if entry is not None:", ("tests/test_meter.py",),
           "the meter resumes from a kept activation a block has since written in place"),
    Mutant("prefix-key-misses-a-block", "bingo/evidence/meter.py",
           "before.extend(t.name for t in inside)", "before.extend(t.name for t in inside[:1])",
           ("tests/test_meter.py",),
           "a kept activation is keyed by one target of each earlier block, not all of them"),
    Mutant("lowest-rounds-float64", "bingo/evidence/candidates.py",
           "    if values.dtype != torch.float64:\n        values = values.float()",
           "    values = values.float()", ("tests/test_schedule.py",),
           "the k lowest of float64 budget scores are cut after rounding them to float32"),
    Mutant("lamp-tails-exclude-self", "bingo/evidence/candidates.py",
           "tails = squares[order].flip(0).cumsum(0).flip(0)",
           "tails = squares[order].flip(0).cumsum(0).flip(0) - squares[order]",
           ("tests/test_gradual_ticket.py",),
           "LAMP divides a weight's square by the larger weights' sum without its own"),
    Mutant("lamp-sums-every-layer", "bingo/pruning/gradual_ticket.py",
           "counts = [int(keep[n].count_nonzero()) for n in names]",
           "counts = [int(sum(keep[n].count_nonzero() for n in names))]",
           ("tests/test_gradual_ticket.py",),
           "the events' LAMP sums over all layers at once, not per layer (no layer adapts)"),
    Mutant("pruned-moments-left", "bingo/pruning/schedule.py",
           "if key in FIRST_MOMENTS and", "if key in () and", ("tests/test_schedule.py",),
           "an event leaves the pruned weights' first moments to decay into denormals"),
    Mutant("second-moments-zeroed", "bingo/pruning/schedule.py",
           "if key in FIRST_MOMENTS and", 'if key in FIRST_MOMENTS + ("exp_avg_sq",) and',
           ("tests/test_schedule.py",),
           "an event zeroes Adam's second moments too (its sqrt then runs on zeros, slowly)"),
    Mutant("moments-zeroed-where-kept", "bingo/pruning/schedule.py",
           "value.masked_fill_(~keep, 0)", "value.masked_fill_(keep, 0)",
           ("tests/test_schedule.py",),
           "an event zeroes the kept weights' moments instead of the pruned ones'"),
    Mutant("loop-does-not-track", "bingo/harness/training.py",
           "        after_step.track(optimizer)", "        pass", ("tests/test_schedule.py",),
           "the training loop does not hand a gradual pruner its optimizer"),
    Mutant("gpt-events-keep-lamp", "bingo/harness/recipes.py",
           'GRADUAL_CANDIDATES: Dict[str, Tuple[str, ...]] = {"char-gpt": ("magnitude", "mag+movement"),',
           'GRADUAL_CANDIDATES: Dict[str, Tuple[str, ...]] = {"charx-gpt": ("magnitude", "mag+movement"),',
           ("tests/test_gradual_ticket.py",),
           "char-gpt's gradual events keep lamp, measured to end above gmp"),
    Mutant("ramp-moments-left", "bingo/pruning/gradual.py",
           "zero_first_moments(self.optimizer, orig, mask != 0)", "pass",
           ("tests/test_gradual.py",),
           "the fine-tune ramp leaves the pruned weights' first moments to decay"),
    Mutant("loop-does-not-track-ramp", "bingo/harness/training.py",
           "isinstance(after_step, (ScheduledPruning, GradualPruning))",
           "isinstance(after_step, ScheduledPruning)", ("tests/test_gradual.py",),
           "the training loop does not hand a fine-tune ramp its optimizer"),
    Mutant("resnet-events-keep-lamp", "bingo/harness/recipes.py",
           '"resnet20": ("magnitude", "mag+movement"),', '"resnet2O": ("magnitude", "mag+movement"),',
           ("tests/test_gradual_ticket.py",),
           "ResNet-20's gradual events keep lamp, measured to end below gmp"),
    Mutant("events-copy-far-batches", "bingo/pruning/gradual_ticket.py",
           "keep = self._event_steps[i] - t < window", "keep = self._event_steps[i] - t < window - 1",
           ("tests/test_gradual_shortcuts.py",),
           "the search skips a batch an event's window needs when a short batch is in it"),
    Mutant("square-order-unguarded", "bingo/evidence/candidates.py",
           "if magnitudes.numel() and not (", "if False and not (",
           ("tests/test_gradual_shortcuts.py",),
           "LAMP's orders are read off the magnitudes' where tiny squares tie"),
    Mutant("movement-summed-unread", "bingo/pruning/gradual_ticket.py",
           '            search_options["movement"] = False\n', "            pass\n",
           ("tests/test_gradual_shortcuts.py",),
           "the search sums movement every step though no event candidate reads it"),
    Mutant("movement-off-though-read", "bingo/pruning/gradual_ticket.py",
           'if "movement" not in search_options and "movement" not in read:',
           'if "movement" not in search_options:',
           ("tests/test_gradual_shortcuts.py",),
           "mag+movement ranks by movement sums the search no longer keeps"),
    Mutant("harness-sums-unread-movement", "bingo/harness/jobs.py",
           '**({} if self.movement else {"movement": False}),',
           '**{"movement": self.movement},',
           ("tests/test_gradual_ticket.py",),
           "bingo compare's gradual pruner sums movement though no event candidate reads it"),
    Mutant("magnitude-cut-from-top", "bingo/pruning/gradual_ticket.py",
           "cut = orders[c][:more]", "cut = orders[c][-more:]",
           ("tests/test_gradual_shortcuts.py",),
           "magnitude's event cut takes the largest weights of its sort"),
    Mutant("event-candidates-ignored", "bingo/harness/jobs.py",
           "        if self.event_candidates is not None:\n            return tuple(self.event_candidates)",
           "        if False:\n            return tuple(self.event_candidates)",
           ("tests/test_gradual_ticket.py",), "--event-candidates is parsed and then ignored"),
    Mutant("meter-grad-cache-aliased", "bingo/evidence/meter.py",
           "self._last_grad = ({k: m.clone() for k, m in keep.items()}, value, grads)",
           "self._last_grad = (dict(keep), value, grads)", ("tests/test_meter.py",),
           "the meter's last gradient is reused after the caller wrote its masks in place"),
    Mutant("chain-ignores-own-forward", "bingo/engine/batched.py",
           "isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward",
           "isinstance(m, nn.Sequential)", ("tests/test_meter.py",),
           "a Sequential subclass with its own forward is run as a chain of its children"),
    Mutant("activation-unnormalized", "bingo/evidence/activations.py",
           "factor = (rms / mean if mean > 0", "factor = (rms if mean > 0",
           ("tests/test_activations.py",),
           "the activation candidate's layers not put on magnitude's scale"),
    Mutant("activation-patch-order", "bingo/evidence/activations.py",
           "w.abs() * factor.view((1,) + tuple(w.shape[1:]))",
           "w.abs() * factor.view((1,) + tuple(w.shape[1:][::-1])).transpose(1, -1)",
           ("tests/test_activations.py",),
           "a conv's input rms laid over its weight in the wrong (kh, kw, in) order"),
    Mutant("dense-trained-twice", "bingo/harness/shared_run.py",
           "        if not self.searched or self.job.search_calibration != kept:",
           "        if True:", ("tests/test_compare_shared.py",),
           "magnitude and the layer-wise rows train again instead of sharing BINGO's run"),
    Mutant("refit-then-recalibrated", "bingo/pruning/batchnorm.py",
           "    if fit is not None and fit.kept:\n        return 0\n", "",
           ("tests/test_batchnorm.py",),
           "the dense statistics a kept refit relies on are re-estimated after it"),
    Mutant("meter-stale-batchnorm", "bingo/evidence/meter.py",
           "batch_stats=True)", "batch_stats=False)", ("tests/test_batchnorm.py",),
           "the estimators measure masks with the dense network's BatchNorm statistics"),
    Mutant("recalibrate-momentum", "bingo/pruning/batchnorm.py",
           "bn.momentum = None  # cumulative", "bn.momentum = 0.1  # cumulative",
           ("tests/test_batchnorm.py",),
           "the re-estimated statistics are an exponential average from the reset values"),
    Mutant("borrowed-tracks-stats", "bingo/engine/borrow.py",
           "bn.training, bn.track_running_stats = True, False",
           "bn.training, bn.track_running_stats = True, True", ("tests/test_batchnorm.py",),
           "a measurement with batch statistics writes the BatchNorm buffers"),
    Mutant("floor-stale-batchnorm", "bingo/pruning/batchnorm.py",
           "        recalibrate_batchnorm(model, examples)\n        return evaluate(model)",
           "        return evaluate(model)", ("tests/test_batchnorm.py",),
           "a floor's bisection on a BatchNorm model measures with the dense statistics"),
    Mutant("ranks-same-share", "bingo/engine/distributed.py",
           "range(self.rank, variants, self.world)", "range(0, variants, self.world)",
           ("tests/test_distributed.py",),
           "every rank evaluates the same variants: half are never measured"),
    Mutant("ranks-local-batch", "bingo/engine/distributed.py",
           "return self._gather(inputs, sizes), self._gather(labels, sizes)",
           "return inputs, labels", ("tests/test_distributed.py",),
           "a search step measures each variant on its own rank's slice only"),
    Mutant("ranks-before-summed", "bingo/engine/distributed.py",
           "        if self.rank == 0:\n            values[0] = before",
           "        if True:\n            values[0] = before", ("tests/test_distributed.py",),
           "the unchanged model's metric is summed over the ranks"),
    Mutant("ranks-metrics-summed", "bingo/engine/distributed.py",
           "values = values[:-1] / values[-1]\n", "values = values[:-1]\n",
           ("tests/test_distributed.py",),
           "a step's metrics summed over the ranks' examples instead of averaged"),
    Mutant("meter-local-loss", "bingo/evidence/meter.py",
           "        value = self.search.ranks.mean(value, len(self.labels))\n", "",
           ("tests/test_distributed.py",),
           "a measured mask's loss is this rank's kept examples' alone"),
    Mutant("meter-local-grad", "bingo/evidence/meter.py",
           "        grads = ranks.mean_tensors(dict(zip(overrides, grads)), n)",
           "        grads = dict(zip(overrides, grads))", ("tests/test_distributed.py",),
           "the swap search's gradient is this rank's kept examples' alone"),
    Mutant("ranks-keep-all", "bingo/engine/distributed.py",
           "return total // self.world + (self.rank < total % self.world)", "return total",
           ("tests/test_distributed.py",), "each rank keeps the whole total of kept examples"),
    Mutant("gradual-local-loss", "bingo/pruning/gradual_ticket.py",
           "        value = self.search.ranks.mean(value, len(labels))", "",
           ("tests/test_distributed.py",),
           "a pruning event measures its proposals on this rank's kept examples alone"),
    Mutant("synflow-ids-looked-up", "bingo/harness/baselines/scores.py",
           "            return module.weight.sum(0).expand_as(out)\n",
           "            return None\n",
           ("tests/test_baselines.py::test_synflow_on_token_ids_is_synflow_of_the_all_ones_one_hot",),
           "SynFlow on token ids looks up the ids' rows instead of the all-ones one-hot"),
    Mutant("imp-point-of-the-last-round", "bingo/harness/methods.py",
           "        r = min(rounds[1:], key=lambda r: abs(r.sparsity - s))\n",
           "        r = rounds[-1]\n",
           ("tests/test_text_runs.py::test_imp_and_synflow_run_on_text_and_record_the_validation_loss",),
           "every IMP point reports the last round's figures"),
    Mutant("imp-round-budget-off-by-one", "bingo/harness/baselines/imp.py",
           "    while max_rounds is None or len(rounds) <= max_rounds:\n",
           "    while max_rounds is None or len(rounds) <= max_rounds + 1:\n",
           ("tests/test_baselines.py::test_imp_stops_at_its_round_budget_and_reports_only_the"
            "_sparsities_reached",),
           "IMP prunes one round more than --imp-rounds allows"),
    Mutant("vgg-conv-bias", "bingo/harness/models.py",
           "nn.Conv2d(cin, cout, 3, 1, 1, bias=False)", "nn.Conv2d(cin, cout, 3, 1, 1)",
           ("tests/test_models.py",), "the VGG's convs carry a bias that BatchNorm cancels"),
    Mutant("vgg-pool-dropped", "bingo/harness/models.py",
           '    11: (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8),',
           '    11: (1, "M", 2, "M", 4, 4, 8, 8, "M", 8, 8),', ("tests/test_models.py",),
           "VGG-11 loses a max-pool (a wrong configuration A)"),
    Mutant("recipe-help-cut", "bingo/harness/recipes.py",
           "f\"calibration {r['calibration']}{own}\")",
           "f\"calibration {r['calibration']}{own}\" if own else f\"calibration {r['calibration']}\")",
           ("tests/test_text_runs.py",), "--help lists the CIFAR recipes as their calibration only"),
    Mutant("vgg-recipe-mnist", "bingo/harness/recipes.py",
           '"resnet20": CIFAR_CNN, "vgg11": CIFAR_CNN, "vgg11-w16": CIFAR_CNN,',
           '"resnet20": CIFAR_CNN, "vgg11": CIFAR_CNN,', ("tests/test_text_runs.py",),
           "the CPU VGG trains with the MNIST nets' recipe"),
]


def copy_tree(dest: Path) -> None:
    """The package (kernels inside it, as installed), its tests and its build files."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")

    def package(src, names):  # a bingo/kernels link (bench/gpu_checks.sh makes one) skipped
        return ignore(src, names) | ({"kernels"} if Path(src) == ROOT / "bingo" else set())
    shutil.copytree(ROOT / "bingo", dest / "bingo", ignore=package)
    shutil.copytree(ROOT / "kernels", dest / "bingo" / "kernels", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copytree(ROOT / "csrc", dest / "csrc", ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)


def environment(dest: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(dest), CI="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("BINGO_BACKEND", None)
    return env


def check_imports(dest: Path) -> None:
    """The copy, not the installed package, must be what the tests import."""
    code = ("import bingo, bingo.kernels, bingo._cpu; "
            "print(bingo.__file__); print(bingo.kernels.__file__); print(bingo._cpu.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=dest, env=environment(dest),
                         capture_output=True, text=True, check=True).stdout.split()
    stray = [f for f in out if not Path(f).resolve().is_relative_to(dest.resolve())]
    if stray:
        raise SystemExit(f"the copy is not what Python imports: {stray}")


def rebuild(dest: Path) -> None:
    """Compile the copy's C++ extension anew (pybind11 comes with the test extra)."""
    for old in (dest / "bingo").glob("_cpu*.so"):
        old.unlink()
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=dest, env=environment(dest), capture_output=True, text=True)
    if proc.returncode != 0 or not list((dest / "bingo").glob("_cpu*.so")):
        raise SystemExit(f"the mutated C++ extension did not build (pip install pybind11?):\n"
                         f"{proc.stderr[-2000:]}")


def run_tests(dest: Path, tests: Sequence[str], data_dir: str) -> Tuple[int, str]:
    """(pytest's exit status, its last lines); stops at the first failure."""
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider",
           "--data-dir", data_dir]
    proc = subprocess.run(cmd, cwd=dest, env=environment(dest), capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith("FAILED") or ln.startswith("ERROR")]
    return proc.returncode, (failed[0] if failed else lines[-1] if lines else proc.stderr[-300:])


def apply(dest: Path, m: Mutant) -> None:
    path = dest / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutant {m.name}: its line occurs {text.count(m.old)} times in "
                         f"{m.path} (expected once); update the mutant to the code")
    path.write_text(text.replace(m.old, m.new))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("BINGO_DATA"))
    parser.add_argument("--only", nargs="*", default=None, help="mutant names")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not first check that the unchanged copy passes")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:26s} {m.path:26s} {m.why}")
        return 0
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown or not chosen:
        parser.error(f"unknown mutants {sorted(unknown)}; see --list")
    if not args.data_dir:
        parser.error("pass --data-dir DIR (the folder holding MNIST/raw/) or set BINGO_DATA")
    data_dir = str(Path(args.data_dir).resolve())
    with tempfile.TemporaryDirectory(prefix="bingo-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        check_imports(base)
        if not args.skip_baseline:
            files = sorted({t for m in chosen for t in m.tests})
            start = time.perf_counter()
            rc, last = run_tests(base, files, data_dir)
            print(f"baseline (no mutant) on {len(files)} files: rc {rc} in "
                  f"{time.perf_counter() - start:.0f} s: {last}", flush=True)
            if rc != 0:
                print("the unchanged copy fails: fix the suite before judging mutants")
                return 2
        missed = []
        for m in chosen:
            dest = Path(tmp) / m.name
            shutil.copytree(base, dest, symlinks=True)
            apply(dest, m)
            if m.rebuild:
                rebuild(dest)
            start = time.perf_counter()
            rc, last = run_tests(dest, m.tests, data_dir)
            verdict = "caught" if rc == 1 else "MISSED" if rc == 0 else f"rc {rc}"
            if rc != 1:
                missed.append(m.name)
            print(f"{m.name:26s} {verdict:7s} {time.perf_counter() - start:5.0f} s  {last}",
                  flush=True)
            shutil.rmtree(dest)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} mutants caught"
          + (f"; missed or broken: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
