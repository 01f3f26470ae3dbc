"""Executes colab/jackpot.ipynb offline and checks what it reports."""

import json
import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "colab" / "jackpot.ipynb"


def _printed(notebook):
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def test_notebook_finds_a_jackpot_over_the_pretrained_weights(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = _printed(notebook)
    line = next(line for line in printed.splitlines() if line.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    assert results["kept_weights_identical"] is True
    assert results["pruned_weights"] == round(0.9 * results["searched_weights"])
    assert results["classifier_zeros"] == 0
    assert results["mask_moved"] > 0
    # The search recovers accuracy that magnitude pruning alone lost.
    assert results["jackpot_accuracy"] > results["magnitude_accuracy"]
    assert "Hamming" in printed or "hamming" in printed
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
