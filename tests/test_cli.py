"""`bingo prune` end to end on a slice of real MNIST."""
import json
import subprocess
import sys

import pytest

from bingo.harness.cli import main

REQUIRED = {"method", "model", "dataset", "seed", "sparsity", "dense_accuracy",
            "pruned_accuracy", "per_layer", "train_seconds", "search_seconds",
            "score_seconds", "prune_seconds", "total_seconds", "calibration", "config"}


def test_prune_to_sparsity_writes_json(data_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    code = main(["prune", "--model", "paper-mlp", "--data-dir", str(data_dir), "--epochs", "1",
                 "--train-limit", "3000", "--variants", "3", "--fraction", "0.1",
                 "--metric", "accuracy", "--granularity", "neuron", "--rule", "contrast",
                 "--sparsity", "0.5", "--seed", "3", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert REQUIRED <= set(result)
    assert result["method"] == "bingo" and result["model"] == "paper-mlp" and result["seed"] == 3
    assert result["sparsity"] == pytest.approx(0.5, abs=1e-5)
    assert set(result["per_layer"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert 0.5 < result["dense_accuracy"] <= 1 and 0 <= result["pruned_accuracy"] <= 1
    assert result["config"]["variants"] == 3 and result["config"]["rule"] == "contrast"
    assert result["searches"] == 3 * result["train_steps"]
    assert "sparsity" in capsys.readouterr().out


def test_prune_to_min_accuracy(data_dir, tmp_path):
    out = tmp_path / "run.json"
    assert main(["prune", "--data-dir", str(data_dir), "--epochs", "1", "--train-limit", "2000",
                 "--variants", "2", "--min-accuracy", "0.8", "--quiet", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pruned_val_accuracy"] >= 0.8 and result["sparsity"] > 0
    assert result["config"]["min_accuracy"] == 0.8


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["prune", "--data-dir", str(tmp_path / "none"), "--quiet"]) == 2
    assert "data directory" in capsys.readouterr().err


def test_fraction_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--fraction", "1.5"])
    assert "not a fraction in (0, 1)" in capsys.readouterr().err


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "bingo", "prune", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--min-accuracy" in done.stdout


def test_searches_run_only_when_an_estimator_reads_them(data_dir, tmp_path):
    """K defaults to 8 for the estimators that read the random-subset searches and to 0
    for the others (the calibrated default would get the same mask, slower)."""
    from bingo.harness.compare import CompareJob
    from bingo.harness.prune_job import PruneJob
    assert PruneJob().variants_for(["calibrated"]) == 0
    assert PruneJob().variants_for(["magnitude", "search"]) == 8
    assert PruneJob(variants=3).variants_for(["calibrated"]) == 3
    job = CompareJob(methods=["bingo", "bingo:regression", "bingo:units", "imp"])
    assert job.row_estimators() == ["calibrated", "regression", "units"]
    with pytest.raises(ValueError, match="--variants 0 runs none"):
        CompareJob(methods=["bingo:search"], variants=0).validate()
    with pytest.raises(ValueError, match="--variants 0 runs none"):
        PruneJob(estimator="units", variants=0).check_estimators(["units"])
    out = tmp_path / "run.json"
    assert main(["prune", "--data-dir", str(data_dir), "--epochs", "1", "--train-limit", "1000",
                 "--estimator", "search", "--sparsity", "0.5", "--quiet",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["variants"] == 8 and result["searches"] == 8 * result["train_steps"]
    assert "_k8_" in result["name"]
    assert main(["prune", "--data-dir", str(data_dir), "--epochs", "1", "--train-limit", "1000",
                 "--sparsity", "0.5", "--quiet", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["variants"] == 0 and result["searches"] == 0
    assert "_k0_" in result["name"]


def test_calibration_examples_are_a_knob(data_dir, tmp_path):
    """--calibration sets how many recent training examples the calibrated estimator
    measures its masks on; 0 is refused before training for the estimators that measure."""
    from bingo.harness.compare import CompareJob
    from bingo.harness.prune_job import PruneJob
    with pytest.raises(ValueError, match="--calibration 0 keeps none"):
        PruneJob(calibration=0).check_estimators(["calibrated"])
    with pytest.raises(ValueError, match="the budgeted estimator measures masks"):
        CompareJob(methods=["magnitude", "bingo:budgeted"], calibration=0).validate()
    PruneJob(calibration=0).check_estimators(["magnitude", "movement"])  # nothing measured
    with pytest.raises(SystemExit):
        main(["prune", "--calibration", "-5"])
    out = tmp_path / "run.json"
    assert main(["prune", "--data-dir", str(data_dir), "--epochs", "1", "--train-limit", "1000",
                 "--calibration", "300", "--sparsity", "0.5", "--quiet",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["calibration"] == 300
    assert result["calibration"]["examples"] == 300


def test_no_movement_is_a_knob_refused_for_the_estimators_that_read_it():
    from bingo.harness.compare import CompareJob
    from bingo.harness.prune_job import PruneJob
    with pytest.raises(ValueError, match="--no-movement does not collect it"):
        PruneJob(movement=False).check_estimators(["mag+movement"])
    with pytest.raises(ValueError, match="the movement estimator reads the movement proxy"):
        CompareJob(methods=["magnitude", "bingo:movement"], movement=False).validate()
    PruneJob(movement=False).check_estimators(["calibrated"])  # chooses among the others
    job = PruneJob(movement=False)
    assert "_nomove_" in job.name and "_nomove_" not in PruneJob().name
    from bingo.harness.models import build_model
    assert job.make_search(build_model("paper-mlp")).proxies.kinds == ("fisher", "reset")
