"""``--device``: a device this machine cannot run is refused by name before any work, and
on a GPU (skipped with a reason without one) the jobs run there on the same batches and
initial weights as on the CPU, every compare method included."""
from __future__ import annotations

import json

import pytest
import torch

from bingo.harness.cli import main
from bingo.harness.data import load_dataset

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU: --device cuda moves the data and "
                                      "models there; on the CPU only the refusals run")
LENET = ["--model", "lenet300", "--dataset", "mnist", "--train-limit", "2048", "--epochs", "1",
         "--quiet"]
NO_GPU = "cuda:0" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
NO_GPU_HINT = ("sees no CUDA GPU" if not torch.cuda.is_available() else "numbered from 0")


@pytest.mark.parametrize("command", ["prune", "compare"])
@pytest.mark.parametrize("device, hint", [
    ("tpu", "unknown device 'tpu'; give one of cpu, cuda, cuda:N"),
    ("meta", "runs on the CPU or a CUDA GPU"),
    (NO_GPU, NO_GPU_HINT),
])
def test_a_device_this_machine_cannot_run_is_refused_before_training(
        data_dir, tmp_path, capsys, command, device, hint):
    goal = ["--sparsity", "0.5"] if command == "prune" else ["--sparsities", "0.5",
                                                             "--methods", "gmp"]
    assert main([command, "--data-dir", str(data_dir), *LENET, *goal, "--device", device,
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert hint in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_the_cpu_device_is_the_default_and_is_recorded(data_dir, tmp_path):
    out = tmp_path / "p.json"
    assert main(["prune", "--data-dir", str(data_dir), *LENET, "--sparsity", "0.5",
                 "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["device"] == "cpu" and result["environment"]["device"] == "cpu"
    assert "gpu" not in result["environment"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dataset", ["cifar10", "tinyshakespeare"])
def test_on_a_gpu_the_splits_draw_the_same_batches_as_on_the_cpu(data_dir, dataset):
    cpu = load_dataset(dataset, data_dir)
    gpu = cpu.to("cuda")
    assert gpu.train is not cpu.train and (dataset != "tinyshakespeare" or gpu.test is gpu.val)
    for (x, y), (gx, gy) in zip(cpu.train.batches(128, torch.Generator().manual_seed(5)),
                                gpu.train.batches(128, torch.Generator().manual_seed(5))):
        assert gx.is_cuda and gy.is_cuda
        assert torch.equal(x, gx.cpu()) and torch.equal(y, gy.cpu())  # crops and flips too


@pytest.mark.gpu
@needs_gpu
def test_compare_runs_every_method_on_a_gpu_close_to_the_cpu_run(data_dir, tmp_path):
    methods = ("bingo,bingo-gradual,gmp,gmp-layer,imp,magnitude,wanda,sparsegpt,random,"
               "smart-ratio,hybrid,snip,grasp,synflow")
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main(["compare", "--data-dir", str(data_dir), *LENET, "--methods", methods,
                     "--sparsities", "0.9", "--gmp-every", "8", "--device", device,
                     "--out", str(out)]) == 0
        runs[device] = json.loads((out / "results.json").read_text())
    gpu = runs["cuda"]
    assert gpu["environment"]["device"].startswith("cuda") and gpu["environment"]["gpu"]
    for cpu_row, gpu_row in zip(runs["cpu"]["methods"], gpu["methods"]):
        assert cpu_row["method"] == gpu_row["method"]
        (c,), (g,) = cpu_row["points"][-1:], gpu_row["points"][-1:]
        assert g["zeros"] == pytest.approx(0.9, abs=2e-3), gpu_row["method"]
        # the same batches and initial weights; only float summation order differs
        assert abs(g["test_accuracy"] - c["test_accuracy"]) < 0.03, gpu_row["method"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("args", [
    ["--model", "resnet20", "--dataset", "cifar10", "--train-limit", "512", "--sparsity", "0.9"],
    ["--model", "resnet20", "--dataset", "cifar10", "--train-limit", "512", "--sparsity", "0.9",
     "--schedule", "gradual", "--gmp-every", "1"],
    ["--model", "vgg11", "--dataset", "cifar10", "--train-limit", "512", "--sparsity", "0.95",
     "--schedule", "gradual", "--gmp-every", "1"],
    ["--model", "char-gpt", "--dataset", "tinyshakespeare", "--train-limit", "40000",
     "--max-loss-increase", "0.05"],
    ["--model", "char-gpt", "--dataset", "tinyshakespeare", "--train-limit", "40000",
     "--sparsity", "0.7", "--schedule", "gradual", "--gmp-every", "4"],
], ids=["resnet20-one-shot", "resnet20-gradual", "vgg11-gradual", "char-gpt-ceiling",
        "char-gpt-gradual"])
def test_prune_runs_the_cifar_nets_and_char_gpt_on_a_gpu(data_dir, tmp_path, args):
    out = tmp_path / "p.json"
    assert main(["prune", "--data-dir", str(data_dir), *args, "--epochs", "1", "--quiet",
                 "--device", "cuda", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["environment"]["gpu"]
    if "--sparsity" in args:
        assert result["sparsity"] == pytest.approx(float(args[args.index("--sparsity") + 1]),
                                                   abs=1e-3)
