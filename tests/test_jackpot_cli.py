"""The `python -m tfsparse jackpot` job, end to end on the embedded data.

Whether the search beats magnitude pruning is a research claim, measured by
`benchmarks/jackpot.py` (goal `d_beats_a`), not tested here.
"""

import keras
import pytest

import tfsparse as ts
from tfsparse import cli
from tfsparse.layers import Scored


@pytest.mark.slow
def test_cli_job_pretrains_searches_and_reloads_weights(tmp_path, capsys):
    rows = cli.run(["jackpot", "--epochs", "2", "--pretrain-epochs", "3", "--sparsity", "0.8", "--out", str(tmp_path)])
    dense, magnitude, jackpot = rows
    assert jackpot["kept weights identical"] == "yes"
    assert jackpot["mask moved (weights)"] > 0
    printed = capsys.readouterr().out
    assert "Pre-training dense" in printed and f"{jackpot['mask moved (weights)']:,}" in printed
    for name in ("pretrained.weights.h5", "jackpot.keras", "jackpot.png"):
        assert (tmp_path / name).stat().st_size > 1000
    again = cli.run(["jackpot", "--epochs", "1", "--lr", "0.3", "--weights", str(tmp_path / "pretrained.weights.h5"),
                     "--out", str(tmp_path / "again")])
    assert "Loading pre-trained weights" in capsys.readouterr().out
    assert again[0]["test accuracy"] == dense["test accuracy"]
    stripped = keras.saving.load_model(tmp_path / "jackpot.keras")
    assert not any(isinstance(layer, Scored) for layer in stripped.layers)
    # The reported accuracies are those of the saved files on the test digits: the
    # stripped search, and the pre-trained weights with the magnitude mask.
    pretrained = ts.models.lenet_300_100((8, 8, 1))
    pretrained.load_weights(tmp_path / "pretrained.weights.h5")
    for model, row in ((stripped, jackpot), (ts.lottery_jackpot(pretrained, 0.8), magnitude)):
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        accuracy = model.evaluate(ts.data.load("digits", "test"), verbose=0, return_dict=True)["accuracy"]
        assert accuracy == pytest.approx(row["test accuracy"], abs=1e-6), row["model"]


def test_cli_job_rejects_a_bad_learning_rate(tmp_path):
    with pytest.raises(SystemExit, match="--lr must be > 0, received: 0.0"):
        cli.run(["jackpot", "--lr", "0", "--out", str(tmp_path)])
