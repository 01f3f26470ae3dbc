"""Executes colab/freezenet.ipynb offline and checks what it reports."""

import json
import math
import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "colab" / "freezenet.ipynb"


def _printed(notebook):
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def test_notebook_trains_freezenet_and_snip_and_reloads_the_compact_file(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = _printed(notebook)
    line = next(line for line in printed.splitlines() if line.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    assert results["trained_weights"] == math.ceil(round(0.01 * results["kernel_weights"], 9))
    biases = results["parameters"] - results["kernel_weights"]
    assert math.isclose(results["compression"], results["parameters"] / (results["trained_weights"] + biases))
    assert results["frozen_unchanged"] is True
    assert results["same_mask"] is True and results["snip_zeros"] is True
    assert results["reload_bit_exact"] is True and results["damaged_refused"] is True
    # Seed + positions + trained values: far smaller than the dense file.
    assert 10 * results["compact_bytes"] < results["dense_keras_bytes"]
    # The paper's claim at extreme rates: frozen random weights beat zeros.
    assert results["freezenet_accuracy"] > results["snip_accuracy"]
    assert "compression" in printed and "damaged file refused" in printed
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
