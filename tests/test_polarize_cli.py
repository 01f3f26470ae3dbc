"""The `python -m tfsparse polarize` job, end to end on the embedded data.

Whether the stripped network matches the dense one within a point, and beats
L1 pruning and network slimming at equal epochs, is measured by the
structured benchmark, not tested here.
"""

import keras
import pytest

import tfsparse as ts
from tfsparse import cli


@pytest.mark.slow
def test_cli_job_trains_strips_and_saves_a_narrower_model(tmp_path, capsys):
    result = cli.run(["polarize", "--model", "lenet5_caffe", "--epochs", "1", "--sparsity", "0.5", "--no-dense",
                      "--out", str(tmp_path)])
    gated, stripped = result["rows"]
    assert abs(result["removed"] - 0.5) <= 0.02
    assert stripped["test accuracy"] == gated["test accuracy"]
    assert stripped["max |diff|"] <= 1e-5
    assert stripped["FLOPs"] < gated["FLOPs"] and stripped["parameters"] < gated["parameters"]
    assert "Removed" in capsys.readouterr().out
    for name in ("polarized.keras", "gate_histogram.png"):
        assert (tmp_path / name).stat().st_size > 1000
    loaded = keras.saving.load_model(tmp_path / "polarized.keras")
    assert not ts.walk.wrappers(loaded)
    assert loaded.get_layer(index=1).filters < 20


def test_cli_job_rejects_a_bad_sparsity(tmp_path):
    with pytest.raises(SystemExit):
        cli.run(["polarize", "--sparsity", "1.5", "--out", str(tmp_path)])


@pytest.mark.slow
def test_cli_job_removes_residual_blocks(tmp_path, capsys):
    result = cli.run(["polarize", "--model", "resnet20", "--epochs", "1", "--sparsity", "0.3", "--blocks", "0.3",
                      "--no-dense", "--out", str(tmp_path)])
    assert result["rows"][1]["max |diff|"] <= 1e-5
    assert "and the residual blocks" in capsys.readouterr().out
    adds = [layer for layer in keras.saving.load_model(tmp_path / "polarized.keras").layers
            if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 9 - round(0.3 * 7)  # 7 of ResNet-20's 9 blocks have an identity shortcut
