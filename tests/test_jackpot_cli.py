"""The `python -m tfsparse jackpot` job, end to end on the embedded data."""

import keras
import pytest

from tfsparse import cli
from tfsparse.layers import Scored


def test_cli_job_pretrains_searches_and_reloads_weights(tmp_path, capsys):
    rows = cli.run(["jackpot", "--epochs", "2", "--pretrain-epochs", "3", "--sparsity", "0.8", "--out", str(tmp_path)])
    dense, magnitude, jackpot = rows
    assert jackpot["kept weights identical"] == "yes"
    assert jackpot["mask moved (weights)"] > 0
    assert jackpot["test accuracy"] > magnitude["test accuracy"]
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


def test_cli_job_rejects_a_bad_learning_rate(tmp_path):
    with pytest.raises(SystemExit, match="--lr must be > 0, received: 0.0"):
        cli.run(["jackpot", "--lr", "0", "--out", str(tmp_path)])
