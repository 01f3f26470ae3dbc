"""The main job, `python -m tfsparse demo`, end to end on the embedded data."""

import re
import subprocess
import sys

import pytest

from tfsparse import cli


@pytest.mark.slow
def test_demo_prunes_exports_and_reports(tmp_path, capsys):
    dense, pruned = cli.run(["demo", "--epochs", "3", "--sparsity", "0.8", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "TFLite bytes" in printed and f"{pruned['non-zeros']:,}" in printed
    # Kernels are 80% sparse; biases (410 of 50,610) stay dense.
    assert pruned["non-zeros"] <= round(0.2 * (pruned["parameters"] - 410)) + 410
    assert dense["sparsity"] < 0.01
    assert pruned["TFLite bytes"] < 0.4 * dense["TFLite bytes"]
    assert pruned["LiteRT max |diff|"] < 1e-5 and dense["LiteRT max |diff|"] < 1e-5
    assert pruned["test accuracy"] > 0.7
    for name in ("training.png", "dense.tflite", "pruned.tflite"):
        assert (tmp_path / name).stat().st_size > 1000


def test_bad_sparsity_is_rejected_by_name(tmp_path):
    with pytest.raises(SystemExit, match=r"--sparsity must be in \[0, 1\), received: 1.5"):
        cli.run(["demo", "--sparsity", "1.5", "--out", str(tmp_path)])


@pytest.mark.slow
def test_module_entry_point_lists_jobs():
    out = subprocess.run([sys.executable, "-m", "tfsparse", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--epochs", "0"], "argument --epochs: must be a positive integer, received: '0'"),
        (["demo", "--epochs", "-2"], "argument --epochs: must be a positive integer, received: '-2'"),
        (["demo", "--batch-size", "x"], "argument --batch-size: must be a positive integer, received: 'x'"),
        (["jackpot", "--pretrain-epochs", "-1"], "argument --pretrain-epochs: must be an integer >= 0, received: '-1'"),
    ],
)
def test_the_parser_refuses_bad_counts(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_error_in_a_job_is_one_line_without_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"^tfsparse demo: error: Argument `name` must be 'digits'") as exit_info:
        cli.run(["demo", "--data", "no_such_data", "--out", str(tmp_path)])
    assert "\n" not in str(exit_info.value.code)
    with pytest.raises(ValueError, match="Argument `name`"):
        cli.run(["--verbose", "demo", "--data", "no_such_data", "--out", str(tmp_path)])


# What TensorFlow, CUDA probing, absl and the TFLite converter and interpreter
# log natively, and Keras' warning about `fit(shuffle=True)` on a dataset.
NATIVE_LOG = r"absl|oneDNN|onednn|cuda|cpu_feature_guard|XNNPACK|SavedModel|^[IWE]\d{4} |shuffle=True"


@pytest.mark.slow
def test_a_job_prints_only_its_own_output(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tfsparse", "demo", "--epochs", "1", "--batch-size", "1024", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    assert "TFLite bytes" in run.stdout
    noise = [line for line in run.stderr.splitlines() if re.search(NATIVE_LOG, line)]
    assert noise == []


@pytest.mark.slow
def test_a_failing_job_prints_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tfsparse", "demo", "--data", "no_such_data", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("tfsparse demo: error: Argument `name`") and run.stderr.count("\n") == 1
