"""The `python -m tfsparse csgd` job, end to end on the embedded data.

Whether C-SGD beats L1 pruning and the same widths from scratch is a
research claim, measured by the benchmarks, not tested here.
"""

import json

import keras
import pytest

import tfsparse as ts
from tfsparse import cli


@pytest.mark.slow
def test_cli_job_trims_exactly_and_reports_the_baselines(tmp_path, capsys):
    # LeNet-300-100 keeps the test short; the job's default is ResNet-20.
    rows = cli.run(["csgd", "--model", "lenet_300_100", "--epochs", "2", "--csgd-epochs", "8", "--width", "0.5",
                    "--out", str(tmp_path)])
    dense, untrimmed, trimmed, l1, scratch = rows
    assert trimmed["max |logit diff|"] < 1e-4
    assert trimmed["test accuracy"] == untrimmed["test accuracy"]
    assert trimmed["parameters"] == l1["parameters"] == scratch["parameters"] < dense["parameters"] / 2
    assert trimmed["epochs"] == l1["epochs"] == scratch["epochs"] == 10
    clusters = json.loads((tmp_path / "clusters.json").read_text())
    assert {name: len(lists) for name, lists in clusters["clusters"].items()} == {"fc1": 150, "fc2": 50}
    saved = keras.saving.load_model(tmp_path / "csgd.keras")
    assert ts.summary(saved, print_fn=None).total["parameters"] == trimmed["parameters"]
    assert (tmp_path / "csgd.png").stat().st_size > 1000
    assert "largest distance to the kept channel" in capsys.readouterr().out


def test_cli_job_names_a_bad_width(tmp_path):
    with pytest.raises(SystemExit, match="width"):
        cli.run(["csgd", "--width", "1.5", "--out", str(tmp_path)])
