"""The framework callbacks against the plain-loop API on the same batches of real data:
Lightning's ``BingoPruning`` on one device and under ``ddp`` and ``ddp_spawn`` (2 gloo
ranks on loopback), and the Hugging Face ``BingoCallback`` on a small GPT-2 built from
scratch. Each is skipped with a reason (failed under CI=1) without its extra."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from . import needs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", ["single", "ddp", "ddp_spawn"])
def test_lightning_masks_equal_the_plain_loop(mode, data_dir, tmp_path):
    needs.extra("lightning")
    from .lightning_run import plain_loop
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "lightning_run.py"),
                          str(data_dir), str(tmp_path), mode], env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(1 if mode == "single" else 2)]
    plain = plain_loop(data_dir)
    for out in ranks:
        assert out["sparsity"] == pytest.approx(0.9, abs=1e-6)
        assert out["tracked"]  # the pruned weights' moments zeroed: still the same masks
        assert out["masks"].keys() == plain.keys()
        for name, pruned in plain.items():
            assert torch.equal(out["masks"][name], pruned), (mode, name)


HF_STEPS, HF_BATCH, HF_T, HF_SEED = 12, 8, 32, 4
HF_PRUNING = dict(start=0.2, end=0.8, every=2, calibration=32, seed=3)


def _gpt2_and_windows(data_dir):
    """A 2-layer GPT-2 built from scratch (no weights downloaded; dropout off), and
    consecutive windows of real tinyshakespeare characters."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from bingo.harness.data.text import load_text
    ids = load_text(data_dir).train[:HF_STEPS * HF_BATCH * HF_T].view(-1, HF_T)
    config = GPT2Config(vocab_size=65, n_positions=HF_T, n_embd=64, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                        eos_token_id=0)
    torch.manual_seed(HF_SEED)
    return GPT2LMHeadModel(config), ids


def _hf_plain_loop(data_dir):
    import bingo
    from bingo.integrations.transformers import causal_lm_loss, default_include
    model, ids = _gpt2_and_windows(data_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    pruner = bingo.GradualTicketPruning(model, sparsity=0.7, total_steps=HF_STEPS,
                                        include=default_include(model),
                                        loss_fn=causal_lm_loss, **HF_PRUNING)
    for i in range(HF_STEPS):
        x = ids[i * HF_BATCH:(i + 1) * HF_BATCH]
        items = torch.tensor(x[:, 1:].numel())  # what the Trainer divides the loss by
        opt.zero_grad()
        model(input_ids=x, labels=x, num_items_in_batch=items).loss.backward()
        opt.step()
        pruner.step(x, x)
    pruner.finish()
    return {n: (w == 0) for n, w in pruner.weights().items()}


def test_hf_trainer_masks_equal_the_plain_loop(data_dir, tmp_path):
    needs.extra("transformers")
    from transformers import Trainer, TrainingArguments

    from bingo.integrations.transformers import BingoCallback
    model, ids = _gpt2_and_windows(data_dir)
    windows = [{"input_ids": w, "labels": w} for w in ids]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=HF_STEPS,
                             per_device_train_batch_size=HF_BATCH, learning_rate=1e-3,
                             weight_decay=0.0, lr_scheduler_type="constant",
                             max_grad_norm=0.0, optim="adamw_torch", use_cpu=True,
                             train_sampling_strategy="sequential", report_to="none",
                             save_strategy="no", logging_strategy="no", disable_tqdm=True)
    callback = BingoCallback(0.7, **HF_PRUNING)
    Trainer(model=model, args=args, train_dataset=windows, callbacks=[callback]).train()
    plain = _hf_plain_loop(data_dir)
    assert callback.report.sparsity == pytest.approx(0.7, abs=1e-4)
    assert len(plain) == 8  # c_attn, c_proj, c_fc, mlp c_proj of 2 layers; lm_head is tied
    assert len(callback.session.pruner.events) >= 3
    assert callback.session.pruner.optimizer is not None  # tracked: the same masks
    for name, pruned in plain.items():
        weight = model.get_parameter(name)  # made permanent: the zeros are in the weight
        assert torch.equal(weight == 0, pruned), name


def test_session_end_schedule_prunes_as_the_plain_api(mnist):
    """``schedule="end"`` (no extra needed): the search during the run, one prune at its
    end, the same masks as ``significance`` + ``prune`` on an equal run; permanent after."""
    import torch.nn.functional as F

    import bingo
    from bingo.harness.models import lenet300
    from bingo.integrations.session import PruningSession
    x, y = mnist.train.images[:640], mnist.train.labels[:640]

    def run(hook_model):
        torch.manual_seed(2)
        model = lenet300()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = hook_model(model)
        for i in range(0, 640, 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
            step(x[i:i + 64], y[i:i + 64])
        return model

    session = PruningSession(0.9, schedule="end", calibration=256)
    model = run(lambda m: (session.begin(m, 10), session.step)[1])
    report = session.finish()
    session.make_permanent()
    searches = {}
    plain = run(lambda m: searches.setdefault("s", bingo.TicketSearch(m, calibration=256)).step)
    bingo.prune(plain, searches["s"].significance(sparsity=0.9), sparsity=0.9)
    assert report.sparsity == pytest.approx(0.9, abs=1e-5)
    for name, w in model.named_parameters():  # no weight_orig left: permanent
        assert not name.endswith("_orig")
        if name.endswith("weight"):
            assert torch.equal(w == 0, plain.get_submodule(name[:-7]).weight == 0), name


def test_the_clone_root_does_not_shadow_the_kernels_distribution():
    """Run from the clone's root, bingo's kernels/ folder comes first on sys.path; the
    transformers callback must still get the Hugging Face ``kernels`` distribution that
    transformers imports (a shadowed name fails inside transformers' model code)."""
    needs.extra("transformers")
    import importlib.metadata
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("this transformers does not install the kernels distribution: no shadow")
    probe = ("import sys; sys.path.insert(0, '.'); import importlib.util as u; "
             "assert u.find_spec('kernels').origin == u.find_spec('bingo.kernels').origin; "
             "import bingo.integrations.transformers, kernels, bingo.kernels as ours; "
             "assert kernels.__file__ != ours.__file__, kernels.__file__; "
             "import transformers.integrations.hub_kernels")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
