"""Executes the notebooks in colab/ offline and checks what they report.

The accuracy claims the notebooks illustrate (FreezeNet above SNIP, the
jackpot above magnitude pruning) are measured by `benchmarks/freezenet.py`
and `benchmarks/jackpot.py`, not tested here.
"""

import json
import math
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

import tfsparse as ts

COLAB = pathlib.Path(__file__).resolve().parent.parent / "colab"
# The notebooks' kernel imports the tfsparse under test, whatever is installed.
PACKAGE_ROOT = str(pathlib.Path(ts.__file__).resolve().parent.parent)

pytestmark = pytest.mark.slow


def _execute(name, tmp_path, monkeypatch):
    """Runs colab/<name>.ipynb; returns (printed text, its RESULTS json, image count)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    line = next(line for line in printed.splitlines() if line.startswith("RESULTS "))
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    return printed, json.loads(line[len("RESULTS "):]), images


def _assert_counts_of_test_digits(*accuracies):
    """Each accuracy is a number of correct test digits over their count."""
    count = sum(int(labels.shape[0]) for _, labels in ts.data.load("digits", "test"))
    for accuracy in accuracies:
        assert accuracy * count == pytest.approx(round(accuracy * count), abs=1e-3), accuracy


def test_freezenet_notebook_trains_freezenet_and_snip_and_reloads_the_compact_file(tmp_path, monkeypatch):
    printed, results, images = _execute("freezenet", tmp_path, monkeypatch)
    assert results["trained_weights"] == math.ceil(round(0.01 * results["kernel_weights"], 9))
    biases = results["parameters"] - results["kernel_weights"]
    assert math.isclose(results["compression"], results["parameters"] / (results["trained_weights"] + biases))
    assert results["frozen_unchanged"] is True
    assert results["same_mask"] is True and results["snip_zeros"] is True
    assert results["reload_bit_exact"] is True and results["damaged_refused"] is True
    # Seed + positions + trained values: far smaller than the dense file.
    assert 10 * results["compact_bytes"] < results["dense_keras_bytes"]
    _assert_counts_of_test_digits(results["dense_accuracy"], results["freezenet_accuracy"], results["snip_accuracy"])
    assert "compression" in printed and "damaged file refused" in printed
    assert images == 1


def test_jackpot_notebook_finds_a_jackpot_over_the_pretrained_weights(tmp_path, monkeypatch):
    printed, results, images = _execute("jackpot", tmp_path, monkeypatch)
    assert results["kept_weights_identical"] is True
    assert results["pruned_weights"] == round(0.9 * results["searched_weights"])
    assert results["classifier_zeros"] == 0
    assert results["mask_moved"] > 0
    _assert_counts_of_test_digits(results["dense_accuracy"], results["magnitude_accuracy"], results["jackpot_accuracy"])
    assert "hamming" in printed.lower()
    assert images == 1


def test_hap_notebook_prunes_half_of_the_parameters_with_implants_and_reloads(tmp_path, monkeypatch):
    printed, results, images = _execute("hap", tmp_path, monkeypatch)
    # Half of the parameters, implants counted, within one channel (under 2% of this model).
    assert 0.5 <= results["parameters_removed"] < 0.52
    assert results["flops"][1] < results["flops"][0]
    assert results["implanted_channels"] > 0 and results["implants_trained"] > 0
    assert all(stderr > 0 for _, stderr in results["traces"].values())
    assert results["reload_equal"] is True and results["tflite_max_abs_diff"] < 1e-4
    _assert_counts_of_test_digits(results["dense_accuracy"], results["hap_accuracy"])
    assert "implanted channels per layer" in printed
    assert images == 1


def test_structured_notebook_prunes_half_the_channels_into_a_smaller_faster_plain_model(tmp_path, monkeypatch):
    printed, results, images = _execute("structured", tmp_path, monkeypatch)
    # Global scope removes the fewest channels that reach the ratio: within one channel of it.
    assert 0 <= results["removed_channels"] - 0.5 * results["prunable_channels"] < 1
    dense_parameters, pruned_parameters = results["parameters"]
    dense_flops, pruned_flops = results["flops"]
    assert pruned_parameters < dense_parameters / 2 and pruned_flops < dense_flops / 2
    assert results["same_layer_types"] is True
    assert results["litert_max_abs_diff"] < 1e-4
    _assert_counts_of_test_digits(results["dense_accuracy"], results["before_finetuning_accuracy"],
                                  results["pruned_accuracy"], results["scratch_accuracy"])
    assert "Ref. params" in printed and "prunable" in printed
    assert (tmp_path / "pruned.tflite").stat().st_size < (tmp_path / "dense.tflite").stat().st_size
    assert images == 1


def test_polarization_notebook_closes_the_requested_channels_in_one_pass(tmp_path, monkeypatch):
    printed, results, images = _execute("polarization", tmp_path, monkeypatch)
    assert abs(results["removed"] - results["sparsity"]) <= 0.02
    assert results["stripped_accuracy"] == results["gated_accuracy"]
    assert results["max_difference"] <= 1e-5 and results["same_layer_types"] is True
    assert results["parameters"][1] < results["parameters"][0] and results["flops"][1] < results["flops"][0]
    assert 0.0 <= results["polarized"] <= 1.0
    _assert_counts_of_test_digits(results["gated_accuracy"])
    assert "gates_open" in printed
    assert images == 1


def test_csgd_notebook_trims_exactly_after_centripetal_training(tmp_path, monkeypatch):
    printed, results, images = _execute("csgd", tmp_path, monkeypatch)
    assert results["widths"] == [150, 50]
    assert results["max_logit_difference"] < 1e-4
    assert results["trimmed_accuracy"] == results["trained_accuracy"]
    assert results["distances"][-1] < 1e-5 < results["start_distance"]
    assert results["trimmed_parameters"] < results["dense_parameters"] / 2
    _assert_counts_of_test_digits(results["dense_accuracy"], results["l1_accuracy"], results["trimmed_accuracy"])
    assert "largest distance to the kept channel" in printed
    assert images == 1
