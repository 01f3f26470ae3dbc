"""The `python -m tfsparse hap` job, end to end on the embedded data.

Whether HAP with implants beats L1 and Taylor after equal fine-tuning is a
research claim, measured by `benchmarks/structured.py`.
"""

import keras
import pytest

import tfsparse as ts
from tfsparse import cli


@pytest.mark.slow
def test_cli_job_prunes_with_implants_and_reports_what_the_saved_file_holds(tmp_path, capsys):
    # LeNet-5-Caffe (two 5x5 convolutions) keeps the test short; the job's default ResNet-20 runs in benchmarks.
    rows = cli.run(["hap", "--model", "lenet5_caffe", "--epochs", "1", "--finetune-epochs", "1", "--samples", "2",
                    "--hessian-batches", "1", "--ratio", "0.5", "--implant-fraction", "0.2", "--out", str(tmp_path)])
    dense, pruned = rows
    printed = capsys.readouterr().out
    assert "hap: removed" in printed and "of params" in printed and "LiteRT ms" in printed
    for name in ("dense.weights.h5", "hap.keras", "dense.tflite", "hap_0.tflite", "hap.png"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = keras.saving.load_model(tmp_path / "hap.keras")
    total = ts.summary(saved, print_fn=None).total
    assert (total["parameters"], total["flops"]) == (pruned["parameters"], pruned["FLOPs"])
    assert 0.5 <= 1 - pruned["parameters"] / dense["parameters"] < 0.55
    assert pruned["implanted channels"] == sum(layer.filters for layer in saved.layers if layer.name.endswith("_implant"))
    assert pruned["implanted channels"] > 0
    saved.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    test = ts.data.load("digits", "test", image_size=(16, 16))  # LeNet-5-Caffe takes the digits resized
    accuracy = saved.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(pruned["test accuracy"], abs=1e-6)


def test_cli_job_names_a_bad_implant_fraction(tmp_path):
    with pytest.raises(SystemExit, match=r"`implant_fraction` must be a number in \[0, 1\], received: 2.0"):
        cli.run(["hap", "--implant-fraction", "2", "--out", str(tmp_path)])
