"""The `python -m tfsparse freezenet` job, end to end on the embedded data.

Whether frozen random weights beat zeros is a research claim, measured by
`benchmarks/freezenet.py` (`--data digits` for this job's data), not tested here.
"""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse import cli

pytestmark = pytest.mark.slow


def test_cli_job_trains_compares_and_writes_reloadable_files(tmp_path, capsys):
    rows = cli.run(["freezenet", "--epochs", "2", "--freeze-rate", "0.9", "0.99", "--out", str(tmp_path)])
    dense, freezenet_90, snip_90, freezenet_99, snip_99 = rows
    assert [row["model"] for row in rows] == ["dense", "FreezeNet", "SNIP", "FreezeNet", "SNIP"]
    parameters = dense["trained"]
    for frozen, pruned in ((freezenet_90, snip_90), (freezenet_99, snip_99)):
        assert frozen["trained"] == pruned["trained"] < parameters
        assert frozen["compression"] == parameters / frozen["trained"]
        assert frozen["reload bit-exact"] == "yes"
        assert frozen["LiteRT max |diff|"] < 1e-4
    assert freezenet_99["compression"] > freezenet_90["compression"]
    printed = capsys.readouterr().out
    assert "FreezeNet at freeze rate 0.99" in printed and f"{freezenet_99['compact bytes']:,}" in printed
    for name in ("dense.keras", "freezenet.png", "freezenet_0.99.tfsparse", "freezenet_0.99.tflite"):
        assert (tmp_path / name).stat().st_size > 1000
    assert 10 * freezenet_99["compact bytes"] < (tmp_path / "dense.keras").stat().st_size
    # The files load without the job: the compact one with tfsparse, the .keras one with Keras alone.
    restored = ts.export.load_compact(tmp_path / "freezenet_0.99.tfsparse")
    frozen_layers = [layer for layer in restored.layers if isinstance(layer, ts.layers.Frozen)]
    assert sum(int(layer.masks[0].numpy().sum()) for layer in frozen_layers) == freezenet_99["trained"] - (
        parameters - sum(int(np.prod(layer.masks[0].shape)) for layer in frozen_layers)
    )
    assert keras.saving.load_model(tmp_path / "dense.keras").count_params() == parameters
    # The reported accuracy is the saved model's on the test digits.
    restored.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    accuracy = restored.evaluate(ts.data.load("digits", "test"), verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(freezenet_99["test accuracy"], abs=1e-6)
