"""The `python -m tfsparse prune-channels` job, end to end on the embedded data.

Whether pruning plus fine-tuning beats the dense model or the same widths
from scratch is a research claim, measured by `benchmarks/structured.py`.
"""

import keras
import pytest

import tfsparse as ts
from tfsparse import cli


@pytest.mark.slow
def test_cli_job_trains_prunes_finetunes_and_reports_what_the_saved_files_hold(tmp_path, capsys):
    # LeNet-300-100 keeps the test short; the job's default ResNet-20 runs in `benchmarks/structured.py`.
    rows = cli.run(["prune-channels", "--model", "lenet_300_100", "--epochs", "2", "--finetune-epochs", "1",
                    "--ratio", "0.5", "--scratch", "--out", str(tmp_path)])
    dense, pruned, scratch = rows
    printed = capsys.readouterr().out
    assert "removed 50.00% of channels" in printed and "LiteRT ms" in printed
    for name in ("dense.weights.h5", "pruned.keras", "dense.tflite", "pruned.tflite", "scratch.tflite",
                 "prune_channels.png"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = keras.saving.load_model(tmp_path / "pruned.keras")
    total = ts.summary(saved, print_fn=None).total
    assert (total["parameters"], total["flops"]) == (pruned["parameters"], pruned["FLOPs"])
    assert pruned["FLOPs ratio"] == dense["FLOPs"] / pruned["FLOPs"] > 1.5
    assert scratch["parameters"] == pruned["parameters"]
    saved.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    accuracy = saved.evaluate(ts.data.load("digits", "test"), verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(pruned["test accuracy"], abs=1e-6)
    # The trained dense weights load back into the reference model and give the reported accuracy.
    again = cli.run(["prune-channels", "--model", "lenet_300_100", "--finetune-epochs", "1", "--importance", "taylor",
                     "--scope", "layer",
                     "--weights", str(tmp_path / "dense.weights.h5"), "--out", str(tmp_path / "again")])
    assert again[0]["test accuracy"] == dense["test accuracy"]
    assert "Loading trained weights" in capsys.readouterr().out


def test_cli_job_names_a_bad_ratio(tmp_path):
    with pytest.raises(SystemExit, match="`ratio` must be a number in \\[0, 1\\), received: 1.5"):
        cli.run(["prune-channels", "--ratio", "1.5", "--weights", "missing.weights.h5", "--out", str(tmp_path)])
